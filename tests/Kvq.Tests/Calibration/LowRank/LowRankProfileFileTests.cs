using System.Security.Cryptography;
using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Formats;
using Kvq.Tests.Cache.Codecs.KvQuant;
using Kvq.Tests.Cache.Codecs.LowRank;

namespace Kvq.Tests.Calibration.LowRank;

/// <summary>The low-rank section of the profile file (version 2): round trip, version 1 kept for profiles without it,
/// typed errors for bad bases.</summary>
public sealed class LowRankProfileFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-lowrank-profile-" + Guid.NewGuid().ToString("N"));
    // Without codebook sensitivities, so the file is version 2 (version 3 adds them: KvQuantProfileSensitivityTests).
    private static readonly Lazy<KvQuantProfile> Sample = new(() => KvQuant.KvQuantProfileSensitivityTests.WithoutSensitivities(
        LowRankTestData.Profile(KvQuantTestData.Shape(2, 2, 16), tokens: 600, latentRanks: [4, 8])));

    public LowRankProfileFileTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Saved(KvQuantProfile p, string name)
    {
        var path = Path.Combine(_dir, name);
        p.Save(path);
        return path;
    }

    [Fact]
    public void RoundTripsBasesAndCodecsEncodeAlike()
    {
        var p = Sample.Value;
        var path = Saved(p, "lr.kvqp");
        Assert.Equal(2u, BitConverter.ToUInt32(File.ReadAllBytes(path), 8));
        var q = KvQuantProfile.Load(path, "test-model");
        Assert.NotNull(q.LowRank);
        Assert.Equal(p.LowRank!.Tokens, q.LowRank!.Tokens);
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
            for (int l = 0; l < 2; l++)
                for (int h = 0; h < 2; h++)
                {
                    var a = p.LowRank.For(side, l, h);
                    var b = q.LowRank.For(side, l, h);
                    Assert.Equal(a.Mean, b.Mean);
                    Assert.Equal(a.Eigenvalues, b.Eigenvalues);
                    Assert.Equal(a.Vectors, b.Vectors);
                }
        Assert.Equal(p.Calibrations[0].KeysPreRope.Zero, q.Calibrations[0].KeysPreRope.Zero);
        Assert.Equal([4, 8], q.LowRank.Latent.Select(e => e.Rank));
        for (int i = 0; i < 2; i++)
        {
            var (a, b) = (p.LowRank.Latent[i].Calibrations, q.LowRank.Latent[i].Calibrations);
            Assert.Equal(a.Count, b.Count);
            for (int j = 0; j < a.Count; j++)
            {
                Assert.Equal(a[j].KeysPreRope.Range, b[j].KeysPreRope.Range);
                Assert.Equal(a[j].Codebooks.Select(c => c.Codebook.Levels), b[j].Codebooks.Select(c => c.Codebook.Levels));
            }
        }
        var x = LowRankTestData.Activations(1, 16, 16, 3);
        var c1 = (KvCacheConfig.Parse("lr4+nuq3-1%") with { Profile = p }).CreateCodec(KvSide.Key, 1, 0, 16);
        var c2 = (KvCacheConfig.Parse("lr4+nuq3-1%") with { Profile = q }).CreateCodec(KvSide.Key, 1, 0, 16);
        var b1 = new byte[c1.BlockBytes];
        var b2 = new byte[c2.BlockBytes];
        BlockOutliers r1 = new(), r2 = new();
        c1.EncodeToken(x, b1, r1, 2);
        c2.EncodeToken(x, b2, r2, 2);
        Assert.Equal(r1.Raw.ToArray(), r2.Raw.ToArray());
        Assert.Equal(b1, b2);
        Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(Saved(q, "again.kvqp"))); // deterministic
    }

    [Fact]
    public void WithoutBasesTheFileStaysVersion1ByteForByte()
    {
        var p = Sample.Value;
        var plain = new KvQuantProfile(p.ModelFingerprint, p.Settings, p.Layers, p.KvHeads, p.HeadDim, p.Calibrations);
        var v1 = File.ReadAllBytes(Saved(plain, "v1.kvqp"));
        var v2 = File.ReadAllBytes(Saved(p, "v2.kvqp"));
        Assert.Equal(1u, BitConverter.ToUInt32(v1, 8));
        // Version 2 is version 1's body with the section appended (then its own checksum).
        Assert.Equal(v1[12..^32], v2[12..(v1.Length - 32)]);
        Assert.Null(KvQuantProfile.Load(Path.Combine(_dir, "v1.kvqp")).LowRank);
        var e = Assert.Throws<KvSpecException>(() => (KvCacheConfig.Parse("lr4+f16") with { Profile = plain }).CreateCodec(KvSide.Key, 0, 0, 16));
        Assert.Contains("--lowrank", e.Message);
    }

    [Fact]
    public void BadSectionsAreTypedErrors()
    {
        var good = File.ReadAllBytes(Saved(Sample.Value, "good.kvqp"));
        var v1Length = File.ReadAllBytes(Saved(new KvQuantProfile(Sample.Value.ModelFingerprint, Sample.Value.Settings, 2, 2, 16,
            Sample.Value.Calibrations), "plain.kvqp")).Length;
        int section = v1Length - 32; // the section starts where version 1's body ended
        var path = Path.Combine(_dir, "bad.kvqp");
        void Expect(byte[] body, string item)
        {
            File.WriteAllBytes(path, [.. body, .. SHA256.HashData(body)]);
            var e = Assert.Throws<ModelFormatException>(() => KvQuantProfile.Load(path));
            Assert.Equal(item, e.Item);
        }
        var body = good[..^32];
        const int hd = 16, basisBytes = (2 * hd + hd * hd) * 4;
        // First key basis of layer 0 head 0: mean, eigenvalues, vectors. A negative eigenvalue, then a non-unit vector.
        var negative = (byte[])body.Clone();
        BitConverter.GetBytes(-1f).CopyTo(negative, section + 8 + hd * 4 + 4);
        Expect(negative, "low-rank key basis of layer 0 head 0");
        var stretched = (byte[])body.Clone();
        int vec = section + 8 + basisBytes * 3 + 2 * hd * 4; // layer 1 head 1 (4th basis), first vector value
        BitConverter.GetBytes(BitConverter.ToSingle(stretched, vec) * 1.5f + 0.5f).CopyTo(stretched, vec);
        Expect(stretched, "low-rank key basis of layer 1 head 1");
        var nan = (byte[])body.Clone();
        BitConverter.GetBytes(float.NaN).CopyTo(nan, section + 8 + 4 * basisBytes + 4); // first value basis, a mean value
        Expect(nan, "low-rank value basis of layer 0 head 0");
        Expect(body[..(section + 108)], "low-rank bases");   // truncated bases (checksum recomputed)
        Expect(body[..^4], "codebook level");                // truncated latent calibrations: the last codebook's last level
        var twice = (byte[])body.Clone();
        int latentStart = section + 8 + 8 * basisBytes + 4;  // i32 count, then the first latent's i32 rank (4)
        int secondRank = SecondLatentRankOffset(twice, latentStart);
        BitConverter.GetBytes(4).CopyTo(twice, secondRank);
        Expect(twice, "latent rank");
        Expect([.. body, 0], "end");                  // trailing byte
        var v1WithSection = (byte[])body.Clone();
        BitConverter.GetBytes(1u).CopyTo(v1WithSection, 8);
        Expect(v1WithSection, "end");                 // a version 1 file has no section: its bytes are unexpected
    }

    /// <summary>Offset of the second latent calibration's rank: after the first one's rank and calibrations, whose size
    /// follows from re-serialising a profile with only that latent.</summary>
    private int SecondLatentRankOffset(byte[] body, int firstRank)
    {
        var p = Sample.Value;
        var onlyFirst = p.WithLowRank(p.LowRank!.WithLatent([p.LowRank.Latent[0]]));
        var noLatent = p.WithLowRank(p.LowRank.WithLatent([]));
        int firstSize = File.ReadAllBytes(Saved(onlyFirst, "first.kvqp")).Length - File.ReadAllBytes(Saved(noLatent, "none.kvqp")).Length;
        Assert.Equal(4, BitConverter.ToInt32(body, firstRank));
        return firstRank + firstSize;
    }
}
