using System.Diagnostics;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Tensors.Quant;

namespace Kvq.Micro;

/// <summary>
/// --quick-encode: a decode token's key encode (<see cref="NuqChannelCodec.EncodeToken(ReadOnlySpan{float}, Span{byte}, BlockOutliers?, int)"/>,
/// head dim 64, 1% outliers) against the scalar loop it replaced (kept here, verbatim, as the "before"), in
/// interleaved rounds, best of each; both write the same bytes (checked).
/// </summary>
public static class EncodeAB
{
    public static void Run(int bits, int rounds)
    {
        const int d = 64, bt = 32, tokens = 4096;
        var rng = new Random(5);
        var zero = new float[d];
        var range = new float[d];
        for (int c = 0; c < d; c++) { zero[c] = (float)(rng.NextDouble() - 0.5); range[c] = 0.5f + (float)rng.NextDouble(); }
        var levels = new float[1 << bits];
        for (int i = 0; i < levels.Length; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.6 - 0.3)) / (levels.Length - 1);
        Array.Sort(levels);
        var spec = KvQuantSpec.TryParse($"nuq{bits}-1%")!;
        var codec = new NuqChannelCodec(spec, KvSide.Key, bt, d, zero, range, new NuqCodebook(levels));
        var x = new float[tokens * d];
        for (int i = 0; i < x.Length; i++)
        {
            double u = rng.NextDouble() * 2 - 1;
            if (rng.NextDouble() < 0.012) u *= 1.5;   // ~1% outside [-1, 1]
            x[i] = zero[i % d] + range[i % d] * (float)u;
        }
        var blockA = new byte[codec.BlockBytes];
        var blockB = new byte[codec.BlockBytes];
        var rowsA = new BlockOutliers();
        var rowsB = new BlockOutliers();
        double bestNew = double.MaxValue, bestOld = double.MaxValue;
        for (int round = 0; round < rounds; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int t = 0; t < tokens; t++) codec.EncodeToken(x.AsSpan(t * d, d), blockA, rowsA, t % bt);
            bestNew = Math.Min(bestNew, Stopwatch.GetElapsedTime(t0).TotalNanoseconds / tokens);
            t0 = Stopwatch.GetTimestamp();
            for (int t = 0; t < tokens; t++) OldEncode(codec, zero, range, bits, x.AsSpan(t * d, d), blockB, rowsB, t % bt);
            bestOld = Math.Min(bestOld, Stopwatch.GetElapsedTime(t0).TotalNanoseconds / tokens);
        }
        if (!blockA.AsSpan().SequenceEqual(blockB) || !rowsA.Raw.SequenceEqual(rowsB.Raw)) throw new InvalidOperationException("the encoders wrote different bytes");
        Console.WriteLine($"nuq{bits}-1% key encode, head dim 64, best of {rounds} rounds of {tokens} tokens: scalar {bestOld:F0} ns/token, " +
                          $"vector {bestNew:F0} ns/token ({bestOld / bestNew:F2}x); load {File.ReadAllText("/proc/loadavg").Trim()}");
    }

    /// <summary>NuqChannelCodec.EncodeToken before this branch (scalar code search and outlier test).</summary>
    private static void OldEncode(NuqChannelCodec codec, float[] zero, float[] range, int bits, ReadOnlySpan<float> x, Span<byte> block,
        BlockOutliers outliers, int slot)
    {
        int d = x.Length, n = 0, codeBytes = NuqBits.Bytes(d, bits);
        Span<byte> codes = stackalloc byte[d];
        Span<int> channels = stackalloc int[d];
        Span<ushort> halves = stackalloc ushort[d];
        var mids = codec.Codebook.Midpoints;
        for (int c = 0; c < d; c++)
        {
            float u = (x[c] - zero[c]) / range[c];
            int code = 0;
            for (int i = 0; i < mids.Length; i++) code += u > mids[i] ? 1 : 0;
            codes[c] = (byte)code;
            if (u > 1f || u < -1f)
            {
                channels[n] = c;
                halves[n++] = QuantFormats.SingleToHalf(Math.Clamp(x[c], -65504f, 65504f));
            }
        }
        NuqBits.Pack(codes, bits, block.Slice(slot * codeBytes, codeBytes));
        outliers.SetToken(slot, d, BlockOutliers.IndexBitsFor(32, d), channels[..n], halves[..n]);
    }
}
