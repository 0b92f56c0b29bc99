using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>Inputs for the codec matrix: geometries, and random KV-like vectors.</summary>
internal static class CodecTestData
{
    public static readonly int[] HeadDims = [8, 32, 64, 96, 128];
    public static readonly int[] BlockSizes = [7, 32, 48];
    public static readonly KvSide[] Sides = [KvSide.Key, KvSide.Value];

    /// <summary>Every registered name, for [MemberData].</summary>
    public static IEnumerable<object[]> Names()
    {
        foreach (var (name, _) in KvCodecRegistry.Formats) yield return [name];
    }

    /// <summary>
    /// Whether a codec is expected to refuse a geometry: ggml blocks need head dims that are multiples of 32, groups
    /// of 64 must tile the head dim, and KIVI's key groups are 32-token blocks.
    /// </summary>
    public static bool Rejects(string name, int blockTokens, int headDim) =>
        name.EndsWith(":rot", StringComparison.Ordinal) ? Rejects(name[..^4], blockTokens, headDim) :
        (name is "q8_0" or "q4_0" && headDim % 32 != 0)
        || (name.EndsWith("-g64") && headDim > 64 && headDim % 64 != 0)
        || (name.StartsWith("kivi") && blockTokens != 32)
        || (Kvq.Cache.Codecs.LowRank.LowRankSpec.TryParse(name) is { } lr && lr.Rank > headDim);

    /// <summary>The codecs a name builds over the matrix (geometries it accepts), with their side.</summary>
    public static IEnumerable<(KvCodec Codec, KvSide Side)> Codecs(string name)
    {
        foreach (var side in Sides)
            foreach (int hd in HeadDims)
                foreach (int bt in BlockSizes)
                    if (!Rejects(name, bt, hd)) yield return (Create(name, side, bt, hd), side);
    }

    /// <summary>A codec for the matrix. Calibrated formats (KVQuant's nuq*, low-rank lrR+*) get a profile fitted on
    /// <see cref="Tokens"/> for the head dim, so that they run on the same data as every other format.</summary>
    /// Codecs with sparse rows beside their blocks come wrapped in <see cref="BlockOutliersTestCodec"/>.
    public static KvCodec Create(string name, KvSide side, int bt, int hd)
    {
        var codec = Kvq.Cache.Codecs.KvQuant.KvQuantSpec.TryParse(name) is null && Kvq.Cache.Codecs.LowRank.LowRankSpec.TryParse(name) is null
            ? KvCodecRegistry.Create(name, side, bt, hd)
            : KvCodecRegistry.Create(name, new KvCodecContext(side, bt, hd, 0, 0, CalibratedProfiles.GetOrAdd(hd, CalibratedProfile)));
        return codec.HasBlockOutliers ? new BlockOutliersTestCodec(codec) : codec;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, IKvProfile> CalibratedProfiles = new();

    private static IKvProfile CalibratedProfile(int hd)
    {
        const int n = 2000;
        var shape = new KvShape(1, 1, 1, hd, new Rope(hd, hd, 10000f, 1f, RopeStyle.Normal));
        var positions = Enumerable.Range(1, n).ToArray();
        var acts = new Kvq.Calibration.KvActivations(shape, positions, [Tokens(n, hd, 101)], [Tokens(n, hd, 102)]);
        var fit = Kvq.Calibration.KvQuant.KvQuantFitter.Fit(acts, new Kvq.Calibration.KvQuant.KvQuantFitOptions([0.01], Bins: 4096, Restarts: 1));
        var settings = new Kvq.Cache.Codecs.KvQuant.KvQuantCalibrationSettings("CodecTestData.Tokens", "", 1, n, 0, 0, false);
        return new Kvq.Cache.Codecs.KvQuant.KvQuantProfile("codec-matrix", settings, 1, 1, hd, fit,
            Kvq.Calibration.LowRank.LowRankFitter.Fit(acts));
    }

    /// <summary>
    /// n tokens x hd values: N(0.3, 1) with outlier channels (channel 1 around +6 with 4x spread, channel hd-3 around
    /// -3, every 9th token of channel 0 spiking to 12), as keys have; never exactly zero.
    /// </summary>
    public static float[] Tokens(int n, int hd, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n * hd];
        for (int t = 0; t < n; t++)
            for (int c = 0; c < hd; c++)
            {
                double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
                float g = (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
                float v = 0.3f + g;
                if (c == 1) v = 6f + 4f * g;
                else if (c == hd - 3) v = -3f + 0.5f * g;
                else if (c == 0 && t % 9 == 4) v = 12f;
                x[t * hd + c] = v == 0f ? 1e-3f : v;
            }
        return x;
    }

    /// <summary>Random bytes, as an arena block reused after another sequence freed it.</summary>
    public static byte[] Garbage(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>Encodes (BlockTokens, HeadDim) values into a block full of garbage (per-token codecs: slots in scrambled order).</summary>
    public static byte[] Encode(KvCodec codec, float[] xs, int seed)
    {
        var block = Garbage(codec.BlockBytes, seed);
        (codec as BlockOutliersTestCodec)?.Rows.Clear();
        int bt = codec.BlockTokens, hd = codec.HeadDim;
        if (codec.EncodesWholeBlocks) codec.EncodeBlock(xs, block);
        else
        {
            var order = Enumerable.Range(0, bt).OrderBy(t => (t * 7919 + seed) % 101).ThenBy(t => t).ToArray();
            foreach (int t in order) codec.EncodeToken(xs.AsSpan(t * hd, hd), block, t);
        }
        return block;
    }

    /// <summary>
    /// Error bounds of the float codecs, which carry none themselves: f32 exact; f16 and bf16 half an ulp of the value
    /// (2^-11 and 2^-8 relative), plus half of f16's subnormal spacing.
    /// </summary>
    public static void FloatBound(KvCodec codec, ReadOnlySpan<float> xs, Span<float> bound)
    {
        float rel = codec.Name switch { "f32" => 0f, "f16" => 1f / 2048, "bf16" => 1f / 256, _ => throw new InvalidOperationException(codec.Name) };
        float abs = codec.Name == "f16" ? 1f / (1 << 25) : 0f;
        for (int i = 0; i < xs.Length; i++) bound[i] = MathF.Abs(xs[i]) * rel + abs;
    }

    public static void Bound(KvCodec codec, ReadOnlySpan<float> xs, Span<float> bound)
    {
        if (codec is IKvCodecReference r) r.MaxAbsError(xs, bound);
        else FloatBound(codec, xs, bound);
    }

    /// <summary>
    /// How close the largest round-trip error must come to the stated bound. 0.25 for codecs whose bound is per value;
    /// a rotated codec's bound is the worst case over the signs of n = run length rotated errors summed, which real
    /// errors (random signs) stay about sqrt(n) below, so its floor is 0.25 / sqrt(n) (and the rotated round trip is
    /// checked exactly against the inner codec in RotatedCodecTests). QJL's residual estimate, a sum of d signed
    /// Gaussians bounded by the sum of their magnitudes, likewise sits about sqrt(d) below its bound.
    /// </summary>
    public static double TightnessFloor(KvCodec codec)
    {
        if (codec is not Kvq.Cache.Codecs.Rotation.RotatedCodec r) return 0.25;
        double floor = 0.25 / Math.Sqrt(Hadamard.BlockSize(codec.HeadDim));
        if (r.Inner is Kvq.Cache.Codecs.TurboQuant.TurboQuantCodec { Qjl: true }) floor /= Math.Sqrt(codec.HeadDim);
        return floor;
    }

    public static string Describe(KvCodec c, KvSide side) => $"{c.Name} {side} hd={c.HeadDim} bt={c.BlockTokens}";
}
