using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Attention;
using Kvq.KernelLab;

namespace Kvq.Cuda.Tests;

/// <summary>The CPU side of the dense GPU layout's check (no GPU needed): the reference decodes a cache by the spec
/// the GPU cache names (nuqB-1% or nuqB), so the dense layout is held to the CPU codecs without outliers.</summary>
public class DenseReferenceTests
{
    [Fact]
    public void TheDenseReferenceClampsWhatTheOnePercentReferenceKeeps()
    {
        const int d = 128, positions = 3, sink = 1;
        var levels = new[] { -1f, -0.3f, 0.3f, 1f };
        var profile = new NuqLayerProfile(1, d, new float[d], Enumerable.Repeat(1f, d).ToArray(), new NuqCodebook(levels), new NuqCodebook(levels));
        var rawK = new float[positions * d];
        var rawV = new float[positions * d];
        var rng = new Random(1);
        for (int i = 0; i < rawK.Length; i++) { rawK[i] = (float)(rng.NextDouble() - 0.5); rawV[i] = (float)(rng.NextDouble() - 0.5); }
        rawK[2 * d + 5] = 6f;    // a key outlier (|u| > 1) of the last token, channel 5
        rawV[2 * d + 9] = 40f;   // a value outlier: the -1% codec keeps it, the dense one widens the token's range
        var (kDense, vDense) = CpuReference.DecodedCache("nuq2", profile, rawK, rawV, 1, positions, sink);
        var (kOne, vOne) = CpuReference.DecodedCache("nuq2-1%", profile, rawK, rawV, 1, positions, sink);
        // The reference returns rotated keys; RoPE mixes the pair (4, 5) but keeps its norm.
        double Norm(double[] k) => Math.Sqrt(k[2 * d + 4] * k[2 * d + 4] + k[2 * d + 5] * k[2 * d + 5]);
        Assert.True(Norm(kOne) > 5.9, $"nuq2-1% keeps the key outlier exactly (pair norm {Norm(kOne)})");
        Assert.True(Norm(kDense) < 1.5, $"nuq2 clamps it to the extreme level (pair norm {Norm(kDense)})");
        Assert.Equal(40.0, vOne[2 * d + 9], 1);
        Assert.Equal(40.0, vDense[2 * d + 9], 0.5);   // the token's max sets the dense range: the top level is 40
        Assert.True(Math.Abs(vDense[2 * d + 0] - rawV[2 * d + 0]) > Math.Abs(vOne[2 * d + 0] - rawV[2 * d + 0]),
            "the dense value codes are coarser (the outlier stretched the token's range)");
        Assert.Throws<ArgumentException>(() => CpuReference.DecodedCache("nuq3", profile, rawK, rawV, 1, positions, sink));
    }

    [Fact]
    public void TheSparseReferenceKeepsKeyOutliersUpToTheChunksCap()
    {
        // Stream tokens 0 and 1 (positions 1 and 2) share a chunk and have one key outlier each; with a cap of one per
        // chunk the first keeps its exact value and the second decodes clamped, as the sparse layout's record does.
        const int d = 128, positions = 3, sink = 1;
        var levels = new[] { -1f, -0.3f, 0.3f, 1f };
        var profile = new NuqLayerProfile(1, d, new float[d], Enumerable.Repeat(1f, d).ToArray(), new NuqCodebook(levels), new NuqCodebook(levels));
        var rawK = new float[positions * d];
        var rawV = new float[positions * d];
        rawK[1 * d + 6] = 5f;
        rawK[2 * d + 6] = 5f;
        double Norm(double[] k, int p) => Math.Sqrt(k[p * d + 6] * k[p * d + 6] + k[p * d + 7] * k[p * d + 7]);
        var (kAll, _) = CpuReference.DecodedCache("nuq2-0.1%", profile, rawK, rawV, 1, positions, sink, "nuq2", keyChunkCap: 47);
        var (kCap, _) = CpuReference.DecodedCache("nuq2-0.1%", profile, rawK, rawV, 1, positions, sink, "nuq2", keyChunkCap: 1);
        // Channel 7 (zero) decodes to a level of +-0.3, so the pair's norm is sqrt(5^2 + 0.09) when kept, sqrt(1 + 0.09) when clamped.
        Assert.InRange(Norm(kAll, 1), 4.95, 5.05);
        Assert.InRange(Norm(kAll, 2), 4.95, 5.05);
        Assert.InRange(Norm(kCap, 1), 4.95, 5.05);
        Assert.InRange(Norm(kCap, 2), 0.95, 1.1);
    }
}
