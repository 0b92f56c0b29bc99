using Kvq.Formats.Gguf;
using Kvq.Tensors;
using Kvq.Tensors.Quant;
using Xunit.Abstractions;

namespace Kvq.Tests.Tensors;

/// <summary>
/// Real llama.cpp output: books-19m.gguf (F16) quantized by llama.cpp into each variant; every quantized tensor is
/// decoded by QuantFormats and compared with the F16 original, fused dots are checked on real rows, and tensors in
/// the 32-value formats are re-encoded from the F16 values by our encoder and must equal llama.cpp's bytes.
/// </summary>
public unsafe class LlamaCppQuantizedModelTests(ITestOutputHelper output)
{
    /// <summary>
    /// Relative RMS error ‖x̂ − x‖ / ‖x‖ allowed per tensor, by type. From the step sizes one expects Q8_0 ≈ 0.5%,
    /// 5-bit ≈ 4%, 4-bit ≈ 8%; measured maxima over all tensors of all variants (test output; llama.cpp as shipped in
    /// LLamaSharp 0.30.0) are Q8_0 0.59%, Q6_K 1.81%, Q5_0 4.68%, Q5_1 4.03%, Q5_K 3.67%, Q4_0 9.46%, Q4_1 8.33%,
    /// Q4_K 7.24%, i.e. 60-80% of these bounds. A layout error gives 100% or more.
    /// </summary>
    private static readonly Dictionary<GgmlType, double> RelRmsBound = new()
    {
        [GgmlType.Q8_0] = 0.01,
        [GgmlType.Q6_K] = 0.025,
        [GgmlType.Q5_0] = 0.06,
        [GgmlType.Q5_1] = 0.05,
        [GgmlType.Q5_K] = 0.05,
        [GgmlType.Q4_0] = 0.12,
        [GgmlType.Q4_1] = 0.10,
        [GgmlType.Q4_K] = 0.10,
        [GgmlType.IQ4_NL] = 0.12,
        [GgmlType.IQ4_XS] = 0.12,
    };

    public static TheoryData<string> Variants()
    {
        var d = new TheoryData<string>();
        foreach (var n in QuantizedFixtures.Names) d.Add(n);
        return d;
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void DecodesEveryTensorCloseToTheF16Original(string variant)
    {
        using var src = GgufFile.Open(Fixtures.BooksGguf);
        using var q = GgufFile.Open(QuantizedFixtures.Get(variant));
        var worst = new Dictionary<GgmlType, (double Err, string Tensor)>();
        var counts = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var rng = new Random(7);
        int requantized = 0;
        foreach (var t in q.Tensors)
        {
            counts[t.Type.ToString()] = counts.GetValueOrDefault(t.Type.ToString()) + 1;
            var o = src.Tensor(t.Name);
            Assert.Equal(o.Dims, t.Dims);
            int n = checked((int)t.Elements);
            var original = new float[n];
            ToFloat(src, o, original);
            if (t.Type == GgmlType.F32)
            {
                Assert.Equal(original, new ReadOnlySpan<float>(q.TensorPointer(t), n).ToArray());
                continue;
            }
            Assert.True(QuantFormats.HasFusedDot(t.Type), $"{variant}: tensor {t.Name} has type {t.Type}, which Kvq cannot read");
            var bytes = new ReadOnlySpan<byte>(q.TensorPointer(t), checked((int)t.ByteSize));
            var decoded = new float[n];
            QuantFormats.Dequantize(t.Type, bytes, decoded);

            double err2 = 0, ref2 = 0;
            for (int i = 0; i < n; i++)
            {
                double e = decoded[i] - original[i];
                err2 += e * e;
                ref2 += (double)original[i] * original[i];
            }
            double rel = Math.Sqrt(err2 / ref2);
            if (!worst.TryGetValue(t.Type, out var w) || rel > w.Err) worst[t.Type] = (rel, t.Name);
            Assert.True(rel <= RelRmsBound[t.Type], $"{variant}: {t.Name} ({t.Type}) relative rms error {rel:P2} > {RelRmsBound[t.Type]:P1}");

            // Fused dot on a few real rows against decode-then-dot.
            int cols = (int)t.Dims[0];
            long rows = t.Rows;
            var x = QuantTestData.RandomVector(cols, rng);
            for (int k = 0; k < 4; k++)
            {
                long r = k == 0 ? 0 : k == 1 ? rows - 1 : rng.NextInt64(rows);
                var row = bytes.Slice((int)(r * t.RowBytes), (int)t.RowBytes);
                float got = QuantFormats.Dot(t.Type, row, x);
                float viaRowKernels = RowKernels.Dot(t.Type, q.TensorPointer(t) + r * t.RowBytes, x);
                var (d, mag) = QuantTestData.DoubleDot(decoded.AsSpan((int)(r * cols), cols), x);
                Assert.True(Math.Abs(got - d) <= QuantFormatsDotTests.RelTol * mag, $"{variant}: {t.Name} row {r}: dot {got} vs {d}");
                Assert.Equal(got, viaRowKernels);
            }

            // The 32-value formats come from ggml's deterministic reference encoders: ours must give the same bytes.
            if (QuantFormats.CanQuantize(t.Type))
            {
                var ours = new byte[bytes.Length];
                QuantFormats.Quantize(t.Type, original, ours);
                int at = bytes.SequenceCompareTo(ours) == 0 ? -1 : FirstDifference(bytes, ours);
                Assert.True(at < 0, $"{variant}: {t.Name} ({t.Type}) re-encoded from F16 differs from llama.cpp at byte {at} " +
                    $"(block {at / GgmlTypeInfo.TypeSize(t.Type)})");
                requantized++;
            }
        }
        output.WriteLine($"{variant}: {string.Join(", ", counts.Select(kv => $"{kv.Key} x{kv.Value}"))}; " +
                         $"{requantized} tensors re-encoded bit-exactly");
        foreach (var (type, (err, name)) in worst.OrderBy(kv => kv.Key))
            output.WriteLine($"  {type}: worst relative rms {err:P2} ({name}), bound {RelRmsBound[type]:P1}");
    }

    [Theory]
    [InlineData("Q8_0")]
    [InlineData("Q4_0")]
    public void EncoderReproducesLlamaCppFileBitExactly(string variant)
    {
        var type = variant == "Q8_0" ? GgmlType.Q8_0 : GgmlType.Q4_0;
        using var src = GgufFile.Open(Fixtures.BooksGguf);
        using var q = GgufFile.Open(QuantizedFixtures.Get(variant));
        int tensors = 0;
        long blocks = 0;
        foreach (var t in q.Tensors.Where(t => t.Type == type))
        {
            var original = new float[checked((int)t.Elements)];
            ToFloat(src, src.Tensor(t.Name), original);
            var ours = new byte[t.ByteSize];
            QuantFormats.Quantize(type, original, ours);
            var theirs = new ReadOnlySpan<byte>(q.TensorPointer(t), ours.Length);
            Assert.True(theirs.SequenceEqual(ours), $"{t.Name}: first difference at byte {FirstDifference(theirs, ours)}");
            tensors++;
            blocks += ours.Length / GgmlTypeInfo.TypeSize(type);
        }
        output.WriteLine($"{variant}: {tensors} {type} tensors, {blocks} blocks identical to llama.cpp's");
        Assert.True(tensors >= 50, $"expected most of books-19m's 58 matrices in {type}, found {tensors}");
    }

    [Fact]
    public void FixturesAreCachedAndNamedConsistently()
    {
        var a = QuantizedFixtures.Get("q8_0");
        var b = QuantizedFixtures.Get(LLama.Native.LLamaFtype.MOSTLY_Q8_0);
        Assert.Equal(a, b);
        Assert.StartsWith(Path.GetFullPath(QuantizedFixtures.CacheDir), a);
        Assert.DoesNotContain(Path.DirectorySeparatorChar + "wt-", Path.GetDirectoryName(a)!); // outside the repo
        Assert.Throws<ArgumentException>(() => QuantizedFixtures.Get("Q9_9"));
        using var g = GgufFile.Open(a);
        Assert.Equal((long)LLama.Native.LLamaFtype.MOSTLY_Q8_0, g.TryGetInt("general.file_type"));
    }

    private static void ToFloat(GgufFile f, GgufTensorInfo t, Span<float> dst)
    {
        Assert.True(t.Type is GgmlType.F16 or GgmlType.F32, $"{t.Name}: source fixture tensor is {t.Type}");
        int n = dst.Length;
        if (t.Type == GgmlType.F32) new ReadOnlySpan<float>(f.TensorPointer(t), n).CopyTo(dst);
        else System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(f.TensorPointer(t), n), dst);
    }

    private static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i < Math.Min(a.Length, b.Length); i++) if (a[i] != b[i]) return i;
        return a.Length == b.Length ? -1 : Math.Min(a.Length, b.Length);
    }
}
