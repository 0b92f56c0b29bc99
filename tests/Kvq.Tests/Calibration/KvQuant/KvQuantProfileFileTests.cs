using System.Security.Cryptography;
using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Formats;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Calibration.KvQuant;

public sealed class KvQuantProfileFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-profile-tests-" + Guid.NewGuid().ToString("N"));
    private static readonly Lazy<KvQuantProfile> Sample = new(() => KvQuantTestData.Profile(KvQuantTestData.Shape(2, 2, 16), tokens: 600));

    public KvQuantProfileFileTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Saved(string name = "p.kvqp")
    {
        var path = Path.Combine(_dir, name);
        Sample.Value.Save(path);
        return path;
    }

    [Fact]
    public void RoundTripsEverything()
    {
        var p = Sample.Value;
        var q = KvQuantProfile.Load(Saved(), "test-model");
        Assert.Equal(p.ModelFingerprint, q.ModelFingerprint);
        Assert.Equal(p.Settings, q.Settings);
        Assert.Equal((p.Layers, p.KvHeads, p.HeadDim), (q.Layers, q.KvHeads, q.HeadDim));
        Assert.Equal(p.Calibrations.Count, q.Calibrations.Count);
        for (int i = 0; i < p.Calibrations.Count; i++)
        {
            var a = p.Calibrations[i];
            var b = q.Calibrations[i];
            Assert.Equal(a.OutlierFraction, b.OutlierFraction);
            Assert.Equal(a.KeysPreRope.Zero, b.KeysPreRope.Zero);
            Assert.Equal(a.KeysPreRope.Range, b.KeysPreRope.Range);
            Assert.Equal(a.KeysPostRope.Zero, b.KeysPostRope.Zero);
            Assert.Equal(a.KeysPostRope.Range, b.KeysPostRope.Range);
            var ba = a.Codebooks.ToList();
            var bb = b.Codebooks.ToList();
            Assert.Equal(ba.Count, bb.Count);
            for (int j = 0; j < ba.Count; j++)
            {
                Assert.Equal((ba[j].Stream, ba[j].Layer), (bb[j].Stream, bb[j].Layer));
                Assert.Equal(ba[j].Codebook.Levels, bb[j].Codebook.Levels);
                Assert.Equal((ba[j].Codebook.NormScale, ba[j].Codebook.NormOffset), (bb[j].Codebook.NormScale, bb[j].Codebook.NormOffset));
            }
        }
        // Codecs built from either encode identically.
        var x = KvQuantTestData.Activations(1, 16, 3);
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
        {
            var c1 = (KvCacheConfig.Parse("nuq3-1%") with { Profile = p }).CreateCodec(side, 1, 1, 16);
            var c2 = (KvCacheConfig.Parse("nuq3-1%") with { Profile = q }).CreateCodec(side, 1, 1, 16);
            var b1 = new byte[c1.BlockBytes];
            var b2 = new byte[c2.BlockBytes];
            BlockOutliers r1 = new(), r2 = new();
            c1.EncodeToken(x, b1, r1, 3);
            c2.EncodeToken(x, b2, r2, 3);
            Assert.Equal(b1, b2);
            Assert.Equal(r1.Raw.ToArray(), r2.Raw.ToArray());
        }
    }

    [Fact]
    public void WritesAreDeterministicAndAtomic()
    {
        var a = File.ReadAllBytes(Saved("a.kvqp"));
        var path = Saved("b.kvqp");
        Assert.Equal(a, File.ReadAllBytes(path));
        Sample.Value.Save(path); // overwrite in place
        Assert.Equal(a, File.ReadAllBytes(path));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
        // A profile that cannot be written leaves the existing file untouched.
        var p = Sample.Value;
        var bad = new KvQuantProfile(p.ModelFingerprint, p.Settings with { Text = new string('x', 5000) }, p.Layers, p.KvHeads, p.HeadDim, p.Calibrations);
        Assert.Throws<ArgumentException>(() => bad.Save(path));
        Assert.Equal(a, File.ReadAllBytes(path));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [Fact]
    public void ProfileOfAnotherModelIsRefusedNamingBothFingerprints()
    {
        var path = Saved();
        var e = Assert.Throws<KvProfileMismatchException>(() => KvQuantProfile.Load(path, "0123456789abcdef"));
        Assert.Contains("test-model", e.Message);
        Assert.Contains("0123456789abcdef", e.Message);
        Assert.Equal("test-model", e.ProfileFingerprint);
    }

    [Fact]
    public void CorruptedFilesAreTypedErrors()
    {
        var good = File.ReadAllBytes(Saved());
        var path = Path.Combine(_dir, "bad.kvqp");
        void Expect(byte[] bytes, string item)
        {
            File.WriteAllBytes(path, bytes);
            var e = Assert.Throws<ModelFormatException>(() => KvQuantProfile.Load(path));
            Assert.Equal(item, e.Item);
            Assert.Contains("bad.kvqp", e.Message);
        }
        Expect([], "header");
        Expect(good[..20], "header");
        var magic = (byte[])good.Clone();
        magic[0] = (byte)'X';
        Expect(magic, "magic");
        var version = (byte[])good.Clone();
        version[8] = 9;
        Expect(version, "version");
        var flipped = (byte[])good.Clone();
        flipped[good.Length / 2] ^= 0x10;
        Expect(flipped, "checksum");
        Expect(good[..^1], "checksum");
        // Every truncation is an error, never a crash or a silently short profile.
        for (int n = 0; n < good.Length; n += 97)
        {
            File.WriteAllBytes(path, good[..n]);
            Assert.Throws<ModelFormatException>(() => KvQuantProfile.Load(path));
        }
        // A well-formed checksum over bad contents still names the item.
        Expect(WithChecksum(Patch(good, FirstRangeOffset(good), BitConverter.GetBytes(-1f))), "keys pre-RoPE");
        Expect(WithChecksum([.. good[..^32], 0, .. good[^32..]]), "end");
    }

    [Fact]
    public void MissingFileIsFileNotFound() =>
        Assert.Throws<FileNotFoundException>(() => KvQuantProfile.Load(Path.Combine(_dir, "none.kvqp")));

    private static byte[] Patch(byte[] data, int offset, byte[] bytes)
    {
        var d = (byte[])data.Clone();
        bytes.CopyTo(d, offset);
        return d;
    }

    private static byte[] WithChecksum(byte[] withOldHash)
    {
        var body = withOldHash[..^32];
        return [.. body, .. SHA256.HashData(body)];
    }

    /// <summary>Offset of the first pre-RoPE range of the first calibration (after its zeros).</summary>
    private static int FirstRangeOffset(byte[] file)
    {
        var p = Sample.Value;
        int strings = 2 + System.Text.Encoding.UTF8.GetByteCount(p.ModelFingerprint) + 2 + System.Text.Encoding.UTF8.GetByteCount(p.Settings.Text)
                      + 2 + System.Text.Encoding.UTF8.GetByteCount(p.Settings.TextSha256);
        int header = 8 + 4 + strings + 4 * 3 + 8 + 1 + 4 * 3 + 4;
        return header + 8 + 4 * p.Layers * p.KvHeads * p.HeadDim;
    }
}
