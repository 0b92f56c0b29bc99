using Kvq.Cache;
using Kvq.Cache.Codecs;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// <see cref="KvCodec.CopySlot"/> (token policies compact blocks with it): every per-token codec describes regions that
/// tile its block exactly, and a copied slot decodes bit for bit like the original while its neighbours stay untouched.
/// Whole-block codecs refuse with a typed error.
/// </summary>
public class CopySlotTests
{
    public static IEnumerable<object[]> Names() => CodecTestData.Names();

    [Theory, MemberData(nameof(Names))]
    public void SectionsTileTheBlockAndCopiesAreExact(string name)
    {
        int seed = 0, withRows = 0, moved = 0;
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            if (!codec.CanCopySlots)
            {
                Assert.True(codec.EncodesWholeBlocks, $"{CodecTestData.Describe(codec, side)}: a per-token codec must describe its token sections");
                Assert.Throws<KvSpecException>(() => codec.CopySlot(new byte[codec.BlockBytes], 0, new byte[codec.BlockBytes], 1));
                continue;
            }
            // Regions cover every byte exactly once.
            var owner = new int[codec.BlockBytes];
            foreach (var s in codec.TokenSections!)
                for (int i = 0; i < bt * s.BytesPerToken; i++) owner[s.Offset + i]++;
            Assert.All(owner, c => Assert.Equal(1, c));

            // Codecs with sparse rows beside blocks: each block has its own, and a copied slot takes its outliers along.
            var inner = codec is BlockOutliersTestCodec w ? w.Inner : codec;
            BlockOutliers? ra = inner.HasBlockOutliers ? new() : null, rb = inner.HasBlockOutliers ? new() : null;
            var a = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, ++seed), seed);
            ra?.CopyFrom(((BlockOutliersTestCodec)codec).Rows);
            var b = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, ++seed), seed);
            rb?.CopyFrom(((BlockOutliersTestCodec)codec).Rows);
            var da = new float[bt * hd];
            var before = new float[bt * hd];
            inner.DecodeBlock(a, ra, bt, da);
            inner.DecodeBlock(b, rb, bt, before);
            if (ra != null) { withRows++; if (ra.Count > 0 && rb!.Count > 0) moved++; }
            var rng = new Random(seed);
            int src = rng.Next(bt), dst = rng.Next(bt);
            inner.CopySlot(a, ra, src, b, rb, dst);
            var after = new float[bt * hd];
            inner.DecodeBlock(b, rb, bt, after);
            for (int t = 0; t < bt; t++)
            {
                var expect = t == dst ? da.AsSpan(src * hd, hd) : before.AsSpan(t * hd, hd);
                Assert.True(expect.SequenceEqual(after.AsSpan(t * hd, hd)), $"{CodecTestData.Describe(codec, side)}: slot {t} after copying {src} -> {dst}");
            }
            // Within one block too (compaction moves slots down inside a block).
            inner.CopySlot(a, ra, bt - 1, a, ra, 0);
            var self = new float[bt * hd];
            inner.DecodeBlock(a, ra, bt, self);
            Assert.True(da.AsSpan((bt - 1) * hd, hd).SequenceEqual(self.AsSpan(0, hd)), CodecTestData.Describe(codec, side));
        }
        // Formats with sparse rows: most geometries had outliers in both blocks to carry along.
        Assert.True(withRows == 0 || moved * 2 > withRows, $"{name}: outliers moved in {moved} of {withRows} geometries");
    }
}
