using Kvq.Tensors;
using Kvq.Tensors.Quant;
using Xunit.Abstractions;

namespace Kvq.Tests.Tensors;

/// <summary>The encoders: SIMD = scalar reference = ggml's quantize_row_*_ref, bit for bit; and their error bounds.</summary>
public class QuantFormatsQuantizeTests(ITestOutputHelper output)
{
    public static TheoryData<GgmlType> Encodable()
    {
        var d = new TheoryData<GgmlType>();
        foreach (var t in QuantTestData.EncodableTypes) d.Add(t);
        return d;
    }

    /// <summary>Inputs that stress rounding and the choice of scale, plus plain random ones.</summary>
    private static IEnumerable<(string Name, float[] X)> Inputs(int blocks, int seed)
    {
        var rng = new Random(seed);
        int n = blocks * 32;
        yield return ("gaussian", QuantTestData.RandomGaussian(n, rng, 0.02f));
        yield return ("uniform", QuantTestData.RandomVector(n, rng));
        // Exact halves after scaling (x*id lands on k + 0.5) and ties for the largest magnitude (+a and -a).
        var ties = new float[n];
        for (int i = 0; i < n; i++) ties[i] = ((i * 37 % 255) - 127) * 0.5f;
        for (int b = 0; b < blocks; b++)
        {
            ties[b * 32 + 3] = b % 2 == 0 ? 127 : -127;
            ties[b * 32 + 20] = b % 2 == 0 ? -127 : 127;
        }
        yield return ("ties", ties);
        var zeros = new float[n];
        zeros[n - 1] = 1e-3f; // all blocks but the last are all zero (d = 0 path)
        yield return ("zeros", zeros);
        var tiny = QuantTestData.RandomGaussian(n, rng, 1e-6f); // scales in the f16 subnormal range
        yield return ("tiny", tiny);
        var mixed = QuantTestData.RandomGaussian(n, rng, 1f);
        for (int i = 0; i < n; i += 7) mixed[i] *= 100; // outliers
        for (int i = 5; i < n; i += 32) mixed[i] = -0.0f;
        yield return ("outliers", mixed);
    }

    [LinuxTheory("ggml's libggml-base is found through /proc/self/maps")]
    [MemberData(nameof(Encodable))]
    public void ReferenceEncoderIsBitIdenticalToGgml(GgmlType type)
    {
        Assert.True(GgmlReference.Available, "libggml-base was not found in this process");
        foreach (var (name, x) in Inputs(blocks: 9, seed: 4000 + (int)type))
        {
            var ours = new byte[GgmlTypeInfo.RowBytes(type, x.Length)];
            var theirs = new byte[ours.Length];
            QuantFormats.QuantizeReference(type, x, ours);
            GgmlReference.Quantize(type, x, theirs);
            AssertSameBytes(type, name, theirs, ours);
        }
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void SimdEncoderIsBitIdenticalToReference(GgmlType type)
    {
        foreach (int blocks in new[] { 1, 2, 3, 7, 64 })
            foreach (var (name, x) in Inputs(blocks, seed: 5000 + blocks))
            {
                var reference = new byte[GgmlTypeInfo.RowBytes(type, x.Length)];
                var simd = new byte[reference.Length];
                var pub = new byte[reference.Length];
                QuantFormats.QuantizeReference(type, x, reference);
                QuantFormats.QuantizeVector256(type, x, simd);
                QuantFormats.Quantize(type, x, pub);
                AssertSameBytes(type, name + " simd", reference, simd);
                AssertSameBytes(type, name + " public", reference, pub);
            }
    }

    [Fact]
    public void AllZeroBlocksEncodeAsGgmlDoes()
    {
        var x = new float[32];
        var q8 = new byte[34];
        QuantFormats.Quantize(GgmlType.Q8_0, x, q8);
        Assert.All(q8, b => Assert.Equal(0, b));
        var q4 = new byte[18];
        QuantFormats.Quantize(GgmlType.Q4_0, x, q4);
        // d = 0 / -8 = -0.0 (f16 0x8000); every code is (int)(0 + 8.5) = 8.
        Assert.Equal(0x00, q4[0]);
        Assert.Equal(0x80, q4[1]);
        Assert.All(q4[2..], b => Assert.Equal(0x88, b));
    }

    /// <summary>
    /// Q8_0: |x - x̂| ≤ d/2 plus the f16 rounding of d (≤ 127·d·2^-11), d = amax/127 per block. Q4_0: d = max/-8, codes
    /// are clamped at 15, so the value opposite in sign to max may lose up to one step; all others are within d/2.
    /// RMS error is about d/√12 (uniform rounding error).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_1)]
    public void RoundTripErrorIsWithinTheStep(GgmlType type)
    {
        var rng = new Random(6000 + (int)type);
        const int blocks = 512;
        var x = QuantTestData.RandomGaussian(blocks * 32, rng, 0.05f);
        var q = new byte[GgmlTypeInfo.RowBytes(type, x.Length)];
        QuantFormats.Quantize(type, x, q);
        var y = new float[x.Length];
        QuantFormats.Dequantize(type, q, y);
        double sumSq = 0, sumStepSq = 0, sumX2 = 0;
        for (int b = 0; b < blocks; b++)
        {
            var xb = x.AsSpan(b * 32, 32);
            float amax = 0, max = 0, min = float.MaxValue, hi = float.MinValue;
            foreach (var v in xb)
            {
                if (MathF.Abs(v) > amax) { amax = MathF.Abs(v); max = v; }
                min = MathF.Min(min, v);
                hi = MathF.Max(hi, v);
            }
            // Quantization step of this block, and the worst error allowed per element.
            (double step, double bound) = type switch
            {
                GgmlType.Q8_0 => (amax / 127.0, amax / 127.0 * (0.5 + 127 * Math.Pow(2, -11))),
                GgmlType.Q4_0 => (amax / 8.0, amax / 8.0 * (1.0 + 8 * Math.Pow(2, -11))),
                GgmlType.Q5_0 => (amax / 16.0, amax / 16.0 * (1.0 + 16 * Math.Pow(2, -11))),
                GgmlType.Q4_1 => ((hi - min) / 15.0, (hi - min) / 15.0 * (0.5 + 15 * Math.Pow(2, -11)) + Math.Abs(min) * Math.Pow(2, -11)),
                GgmlType.Q5_1 => ((hi - min) / 31.0, (hi - min) / 31.0 * (0.5 + 31 * Math.Pow(2, -11)) + Math.Abs(min) * Math.Pow(2, -11)),
                _ => throw new ArgumentException(type.ToString()),
            };
            for (int i = 0; i < 32; i++)
            {
                double e = Math.Abs(xb[i] - y[b * 32 + i]);
                double allowed = bound;
                // Symmetric formats: only a value opposite in sign to max, in the top half step, may be clamped.
                if (type is GgmlType.Q4_0 or GgmlType.Q5_0 && !(Math.Sign(xb[i]) != Math.Sign(max) && Math.Abs(xb[i]) > amax * 0.9))
                    allowed = step * (0.5 + 16 * Math.Pow(2, -11));
                Assert.True(e <= allowed * (1 + 1e-6) + 1e-12,
                    $"{type} block {b} value {i}: x {xb[i]} decoded {y[b * 32 + i]}, error {e} > {allowed}");
                sumSq += e * e;
                sumX2 += (double)xb[i] * xb[i];
            }
            sumStepSq += step * step;
        }
        double rms = Math.Sqrt(sumSq / x.Length);
        double uniform = Math.Sqrt(sumStepSq / blocks / 12);
        output.WriteLine($"{type}: rms error {rms:E3} (uniform-rounding model {uniform:E3}), relative rms {rms / Math.Sqrt(sumX2 / x.Length):P2}");
        Assert.True(rms <= 1.25 * uniform, $"{type}: rms error {rms} vs d/sqrt(12) model {uniform}");
    }

    [Fact]
    public void RejectsWhatItCannotEncode()
    {
        Assert.Throws<NotSupportedException>(() => QuantFormats.Quantize(GgmlType.Q4_K, new float[256], new byte[144]));
        Assert.Throws<ArgumentException>(() => QuantFormats.Quantize(GgmlType.Q8_0, new float[33], new byte[68]));
        Assert.Throws<ArgumentException>(() => QuantFormats.Quantize(GgmlType.Q8_0, new float[64], new byte[67]));
        Assert.False(QuantFormats.CanQuantize(GgmlType.Q6_K));
        Assert.True(QuantFormats.CanQuantize(GgmlType.Q4_0));
    }

    private static void AssertSameBytes(GgmlType type, string what, byte[] expected, byte[] actual)
    {
        int ts = GgmlTypeInfo.TypeSize(type);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i] == actual[i],
                $"{type} {what}: block {i / ts} byte {i % ts} expected 0x{expected[i]:X2}, got 0x{actual[i]:X2}");
    }
}
