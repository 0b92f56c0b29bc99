using System.Security.Cryptography;
using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration.KvQuant;
using Kvq.Formats;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Calibration.KvQuant;

/// <summary><c>kvq calibrate --value-margin</c>: the per-token outlier margin the value codebooks are fitted at, recorded
/// in the profile (version 5) and used by nuq specs that do not give <c>:marginM</c>.</summary>
public sealed class ValueMarginCalibrationTests : IDisposable
{
    private const int Seed = 23;
    private static readonly KvShape Shape = KvQuantTestData.Shape(2, 2, 16);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-margin-tests-" + Guid.NewGuid().ToString("N"));

    public ValueMarginCalibrationTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static IReadOnlyList<KvQuantCalibration> Fit(float? margin)
    {
        var acts = KvQuantTestData.ActivationSet(Shape, 900, Seed, weighted: true);
        var o = new KvQuantFitOptions([0.01], Seed: 7, Threads: 1, Bins: 2048, Restarts: 1);
        return KvQuantFitter.Fit(acts, margin is { } m ? o with { ValueMargin = m } : o);
    }

    private static KvQuantProfile Profile(IReadOnlyList<KvQuantCalibration> cals, float margin) =>
        new("test-model", new KvQuantCalibrationSettings("synthetic", new string('0', 64), 1, 900, 1, 7, true, margin),
            Shape.Layers, Shape.KvHeads, Shape.HeadDim, cals);

    [Fact]
    public void FitAtAnotherMarginChangesOnlyThePerTokenCodebooks()
    {
        var plain = Fit(null)[1];
        var same = Fit(KvQuantSpec.ValueOutlierMargin)[1];
        var low = Fit(1.1f)[1];
        bool valuesMoved = false;
        foreach (var (stream, layer, book) in plain.Codebooks)
        {
            Assert.Equal(book.Levels, same.Codebook(stream, layer, book.Bits)!.Levels);
            var other = low.Codebook(stream, layer, book.Bits)!;
            if (stream.IsPerChannel()) Assert.Equal(book.Levels, other.Levels); // per-channel keys have no per-token split
            else if (stream == KvQuantStream.Value) valuesMoved |= !book.Levels.SequenceEqual(other.Levels);
        }
        Assert.True(valuesMoved, $"seed {Seed}: no value codebook changed between margins 1.5 and 1.1");
        foreach (var bad in new[] { 0f, -1f, 101f, float.NaN })
            Assert.Throws<ArgumentException>(() => Fit(bad));
    }

    [Fact]
    public void ProfileKeepsTheMarginAsVersion5AndRefusesABadOne()
    {
        var cals = Fit(1.25f);
        var path = Path.Combine(_dir, "m.kvqp");
        Profile(cals, 1.25f).Save(path);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(KvQuantProfileFile.VersionMargin, BitConverter.ToInt32(bytes, 8));
        Assert.Equal(1.25f, KvQuantProfile.Load(path).Settings.ValueMargin);
        // The default margin writes the earlier version, byte for byte as before the field existed.
        var plainPath = Path.Combine(_dir, "p.kvqp");
        Profile(cals, KvQuantSpec.ValueOutlierMargin).Save(plainPath);
        var plain = File.ReadAllBytes(plainPath);
        Assert.True(BitConverter.ToInt32(plain, 8) < KvQuantProfileFile.VersionMargin);
        Assert.Equal(bytes.Length - 4 - cals.Count * 2 * Shape.Layers, plain.Length);
        Assert.Equal(KvQuantSpec.ValueOutlierMargin, KvQuantProfile.Load(plainPath).Settings.ValueMargin);
        var bad = Path.Combine(_dir, "bad.kvqp");
        foreach (var value in new[] { 0f, -2f, 150f, float.NaN })
        {
            var d = bytes[..^32];
            BitConverter.GetBytes(value).CopyTo(d, d.Length - 4);
            File.WriteAllBytes(bad, [.. d, .. SHA256.HashData(d)]);
            var e = Assert.Throws<ModelFormatException>(() => KvQuantProfile.Load(bad));
            Assert.Equal("value margin", e.Item);
        }
    }

    [Fact]
    public void CodecsSplitAtTheProfilesMarginUnlessTheSpecGivesOne()
    {
        var cals = Fit(null);
        var p15 = Profile(cals, KvQuantSpec.ValueOutlierMargin);
        var p12 = Profile(cals, 1.2f);
        var rng = new Random(Seed);
        (byte[] Block, byte[] Rows) Encode(string spec, KvQuantProfile p, float[] x)
        {
            var c = (KvCacheConfig.Parse(spec) with { Profile = p }).CreateCodec(KvSide.Value, 1, 0, Shape.HeadDim);
            var block = new byte[c.BlockBytes];
            var rows = new BlockOutliers();
            c.EncodeToken(x, block, rows, 0);
            return (block, rows.Raw.ToArray());
        }
        int differ = 0;
        for (int trial = 0; trial < 200; trial++)
        {
            var x = new float[Shape.HeadDim];
            for (int i = 0; i < x.Length; i++) x[i] = (float)KvQuantTestData.Gaussian(rng);
            x[rng.Next(x.Length)] *= 1.2f + (float)rng.NextDouble(); // a candidate near the two margins
            var atProfile = Encode("nuq3-1%", p12, x);
            Assert.Equal(atProfile, Encode("nuq3-1%:margin1.2", p15, x), Same);
            Assert.Equal(Encode("nuq3-1%", p15, x), Encode("nuq3-1%:margin1.5", p12, x), Same);
            if (!Same.Equals(atProfile, Encode("nuq3-1%", p15, x))) differ++;
        }
        Assert.True(differ > 0, $"seed {Seed}: margins 1.2 and 1.5 coded every token alike");
    }

    private static readonly BytesComparer Same = new();

    private sealed class BytesComparer : IEqualityComparer<(byte[] Block, byte[] Rows)>
    {
        public bool Equals((byte[] Block, byte[] Rows) a, (byte[] Block, byte[] Rows) b) =>
            a.Block.SequenceEqual(b.Block) && a.Rows.SequenceEqual(b.Rows);
        public int GetHashCode((byte[] Block, byte[] Rows) a) => a.Block.Length;
    }
}
