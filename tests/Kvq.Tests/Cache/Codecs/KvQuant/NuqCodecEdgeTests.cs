using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The edges of the nuq encoders and block decoders (written for the codecs' mutation run): a value exactly on a
/// codebook midpoint takes the lower level (random data never lands there), and the argument checks of
/// EncodeToken and DecodeBlock accept the exact sizes and refuse one past them.
/// </summary>
public class NuqCodecEdgeTests(ITestOutputHelper output)
{
    private static NuqCodebook RandomBook(int bits, Random rng)
    {
        var levels = new float[1 << bits];
        for (int i = 0; i < levels.Length; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.8 - 0.4)) / (levels.Length - 1);
        Array.Sort(levels);
        return new NuqCodebook(levels);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void ValuesOnAMidpointTakeTheLowerLevel(int bits)
    {
        int seed = TestSeeds.Of(nameof(ValuesOnAMidpointTakeTheLowerLevel), bits);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var book = RandomBook(bits, rng);
        var mids = book.Midpoints;
        int d = mids.Length * 2 + 2;
        var spec = KvQuantSpec.TryParse($"nuq{bits}")!;

        // Per channel: zero 0 and range 1 on every channel, so u is the value itself.
        var keys = new NuqChannelCodec(spec, KvSide.Key, 4, d, new float[d], Enumerable.Repeat(1f, d).ToArray(), book);
        // Per token: [-R, R] with R a power of two is exactly range code 32 * (log2 R + 16) with zero 0 (TokenScaleTests),
        // so u = x / R is exact too.
        const float r = 0.5f;
        var values = new NuqTokenCodec(spec, KvSide.Value, 4, d, book);
        var x = new float[d];
        x[0] = -r;
        x[1] = r;
        for (int i = 0; i < mids.Length; i++)
        {
            x[2 + 2 * i] = mids[i] * r;                          // on the midpoint: level i
            x[3 + 2 * i] = MathF.BitIncrement(mids[i]) * r;      // just past it: level i + 1
        }
        var kx = x.Select(v => v / r).ToArray();
        foreach (var (codec, input, levelsOf) in new (KvCodec, float[], Func<float, float>)[] { (keys, kx, u => u), (values, x, u => u * r) })
        {
            var block = new byte[codec.BlockBytes];
            rng.NextBytes(block);
            codec.EncodeToken(input, block, 1);
            var dec = new float[2 * d];
            codec.DecodeBlock(block, 2, dec);
            for (int i = 0; i < mids.Length; i++)
            {
                Assert.Equal(levelsOf(book.Levels[i]), dec[d + 2 + 2 * i]);
                Assert.Equal(levelsOf(book.Levels[i + 1]), dec[d + 3 + 2 * i]);
            }
            Assert.Equal(levelsOf(book.Levels[0]), dec[d]);
            Assert.Equal(levelsOf(book.Levels[^1]), dec[d + 1]);
        }
    }

    [Theory]
    [InlineData("nuq3-1%", false)]
    [InlineData("nuq3", false)]
    [InlineData("nuq3-1%", true)]
    [InlineData("nuq2", true)]
    public void ArgumentsAreCheckedAtTheirExactEdges(string name, bool keys)
    {
        const int d = 13, bt = 5;
        var spec = KvQuantSpec.TryParse(name)!;
        var rng = new Random(TestSeeds.Of(nameof(ArgumentsAreCheckedAtTheirExactEdges), name, keys));
        var book = RandomBook(spec.Bits, rng);
        KvCodec codec = keys
            ? new NuqChannelCodec(spec, KvSide.Key, bt, d, new float[d], Enumerable.Repeat(1f, d).ToArray(), book)
            : new NuqTokenCodec(spec, KvSide.Value, bt, d, book);
        BlockOutliers? rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        var x = Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var block = new byte[codec.BlockBytes];
        // Exact sizes pass: the last slot, a block of exactly BlockBytes, a full decode into exactly count x d.
        codec.EncodeToken(x, block, rows, bt - 1);
        codec.EncodeToken(x, block, rows, 0);
        var dst = new float[bt * d];
        codec.DecodeBlock(block, rows, bt, dst);
        Assert.Equal(dst.AsSpan(0, d).ToArray(), dst.AsSpan((bt - 1) * d, d).ToArray());
        codec.DecodeBlock(block, rows, 0, Array.Empty<float>());
        // One past: refused with ArgumentException, the block left as it was.
        var before = (byte[])block.Clone();
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(x, block, rows, bt));
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(x, block, rows, -1));
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(x.AsSpan(0, d - 1).ToArray(), block, rows, 0));
        Assert.Throws<ArgumentException>(() => codec.EncodeToken([.. x, 0.5f], block, rows, 0));
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(x, block.AsSpan(0, block.Length - 1).ToArray(), rows, 0));
        Assert.Equal(before, block);
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block, rows, bt + 1, new float[(bt + 1) * d]));
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block, rows, bt, new float[bt * d - 1]));
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block.AsSpan(0, block.Length - 1).ToArray(), rows, 1, new float[d]));
    }
}
