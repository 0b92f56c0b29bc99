using Kvq.Tensors;
using Kvq.Tensors.Quant;
using Xunit.Abstractions;

namespace Kvq.Tests.Tensors;

/// <summary>
/// The 8-bit activation rounding of quantized products (<see cref="ActivationQuant"/>, <see cref="Q8Dot"/>, the default
/// of <see cref="WeightMatrix"/>) against ggml-cpu itself (the libggml-cpu LLamaSharp loaded for this machine: its
/// activation encoders and its vec_dot), and the integer kernels against their scalar reference.
/// </summary>
public unsafe class ActivationQuantTests(ITestOutputHelper output)
{
    public static TheoryData<GgmlType> ActivationTypes() => new([GgmlType.Q8_0, GgmlType.Q8_1, GgmlType.Q8_K]);

    private static float[] Activations(int n, Random rng)
    {
        // Gaussian with a few large outliers per row, as hidden states have; never zero.
        var x = QuantTestData.RandomGaussian(n, rng, sigma: 0.7f);
        for (int i = 0; i < n / 50 + 1; i++) x[rng.Next(n)] *= 9;
        return x;
    }

    [LinuxTheory("reads ggml-cpu's encoders from the libggml-cpu that LLamaSharp loads")]
    [MemberData(nameof(ActivationTypes))]
    public void EncodersMatchGgmlCpuBitForBit(GgmlType act)
    {
        Assert.True(GgmlReference.CpuAvailable, "libggml-cpu not found in this process");
        var rng = new Random(300 + (int)act);
        int bs = GgmlTypeInfo.BlockSize(act);
        foreach (int nb in new[] { 1, 3, 7 })
        {
            var x = Activations(nb * bs, rng);
            if (nb == 3) x.AsSpan(bs, bs).Clear(); // an all-zero block: d 0, codes 0
            int bytes = (int)GgmlTypeInfo.RowBytes(act, x.Length);
            var ours = new byte[bytes];
            var theirs = new byte[bytes];
            ActivationQuant.Quantize(act, x, ours);
            GgmlReference.CpuQuantizeActivations(act, x, theirs);
            int at = ours.AsSpan().CommonPrefixLength(theirs);
            Assert.True(at == bytes, $"{act}, {nb} blocks: first difference at byte {at} (block {at / GgmlTypeInfo.TypeSize(act)})");

            // The round trip stands for the codes times the stored scale.
            var rt = new float[x.Length];
            ActivationQuant.RoundTrip(act, x, rt);
            var dec = new float[x.Length];
            ActivationQuant.Decode(act, ours, dec);
            Assert.Equal(dec, rt);
            for (int i = 0; i < x.Length; i++)
            {
                float block = x.AsSpan(i / bs * bs, bs).ToArray().Max(MathF.Abs);
                // Half a step, plus the scale's own rounding (f16 for Q8_0/Q8_1: 2^-11 of it, times up to 127 codes).
                Assert.True(MathF.Abs(rt[i] - x[i]) <= block / 127 * 0.5f + block / 1024, $"{act} value {i}: {x[i]} -> {rt[i]}");
            }
        }
    }

    [LinuxTheory("reads ggml-cpu's type traits from the libggml-cpu that LLamaSharp loads")]
    [MemberData(nameof(QuantTestData.AllBlockTypes), MemberType = typeof(QuantTestData))]
    public void VecDotTypeIsGgmls(GgmlType weight)
    {
        Assert.True(GgmlReference.CpuAvailable, "libggml-cpu not found in this process");
        Assert.Equal(GgmlReference.CpuTraits(weight).VecDotType, ActivationQuant.VecDotType(weight));
    }

    [LinuxTheory("compares with ggml-cpu's vec_dot from the libggml-cpu that LLamaSharp loads")]
    [MemberData(nameof(QuantTestData.AllBlockTypes), MemberType = typeof(QuantTestData))]
    public void ProductsMatchGgmlCpuVecDot(GgmlType weight) => ProductsMatchGgml(weight, integerDots: null);

    [LinuxTheory("compares with ggml-cpu's vec_dot from the libggml-cpu that LLamaSharp loads")]
    [InlineData(GgmlType.Q8_0, true)]
    [InlineData(GgmlType.Q8_0, false)]
    [InlineData(GgmlType.Q4_0, true)]
    [InlineData(GgmlType.Q4_0, false)]
    [InlineData(GgmlType.IQ4_NL, true)]
    [InlineData(GgmlType.IQ4_NL, false)]
    public void BothProductPathsMatchGgmlCpuVecDot(GgmlType weight, bool integerDots) => ProductsMatchGgml(weight, integerDots);

    private void ProductsMatchGgml(GgmlType weight, bool? integerDots)
    {
        // Every product path of a quantized matrix (MatVec, MatVecRows, MatMul) against ggml's own vec_dot of the same
        // weight bytes with ggml's own encoding of the activations; the f32 path (ExactActivations) differs by more.
        Assert.True(GgmlReference.CpuAvailable, "libggml-cpu not found in this process");
        var act = ActivationQuant.VecDotType(weight)!.Value;
        var rng = new Random(400 + (int)weight);
        const int rows = 37, tokens = 3;
        int cols = GgmlTypeInfo.BlockSize(weight) == 256 ? 3 * 256 : 7 * 32;
        int rowBytes = (int)GgmlTypeInfo.RowBytes(weight, cols);
        var data = QuantTestData.RandomBlocks(weight, rows * cols / GgmlTypeInfo.BlockSize(weight), rng);
        var w = WeightMatrix.FromBytes("w", rows, cols, weight, data);
        w.IntegerDots = integerDots;
        var x = Activations(tokens * cols, rng);
        var par = new Parallelism(2);

        var vec = new float[rows];
        w.MatVec(x.AsSpan(0, cols), vec, par);
        var vecRows = new float[tokens * rows];
        w.MatVecRows(x, vecRows, tokens, par);
        var mm = new float[tokens * rows];
        w.MatMul(x, mm, tokens, par);
        w.ExactActivations = true;
        var exact = new float[tokens * rows];
        w.MatVecRows(x, exact, tokens, par);

        var deq = new float[cols];
        var xq = new byte[GgmlTypeInfo.RowBytes(act, cols)];
        double worst = 0, worstExact = 0;
        for (int t = 0; t < tokens; t++)
        {
            GgmlReference.CpuQuantizeActivations(act, x.AsSpan(t * cols, cols), xq);
            for (int r = 0; r < rows; r++)
            {
                float theirs = GgmlReference.CpuVecDot(weight, cols, data.AsSpan(r * rowBytes, rowBytes), xq);
                w.DequantizeRow(r, deq);
                double mag = QuantTestData.DoubleDot(deq, x.AsSpan(t * cols, cols)).Magnitude;
                foreach (var (name, got) in new[] { ("MatVecRows", vecRows[t * rows + r]), ("MatMul", mm[t * rows + r]) }
                             .Append(t == 0 ? ("MatVec", vec[r]) : ("MatVecRows", vecRows[t * rows + r])))
                {
                    double rel = Math.Abs(got - theirs) / mag;
                    worst = Math.Max(worst, rel);
                    Assert.True(rel <= Tolerance(act), $"{weight} {name} row {r} token {t}: {got} vs ggml {theirs} (|err|/Σ|wx| = {rel:E2})");
                }
                worstExact = Math.Max(worstExact, Math.Abs(exact[t * rows + r] - theirs) / mag);
            }
        }
        output.WriteLine($"{weight} ({act}): worst |Kvq - ggml| / Σ|wx| = {worst:E2}; f32 activations: {worstExact:E2}");
        Assert.True(worstExact > 3 * worst, $"{weight}: f32 activations ({worstExact:E2}) should differ from ggml more than the rounded ones ({worst:E2})");
    }

    /// <summary>Float rounding for Q8_0/Q8_K; Q8_1 also stores s = d·Σcodes as f16, which Kvq's round trip does not
    /// (its min term m·Σx then differs by up to 2^-11 of m·d·Σcodes).</summary>
    private static double Tolerance(GgmlType act) => act == GgmlType.Q8_1 ? 2e-3 : 1e-5;

    [LinuxFact("compares with ggml-cpu's vec_dot from the libggml-cpu that LLamaSharp loads")]
    public void LlamaCppSumOrderIsGgmlCpuBitForBit()
    {
        // Q8_0 weights in ggml-cpu's order of float operations: every product path equals ggml's own vec_dot bit for bit
        // (odd block counts, codes -128 included), and the AVX2 kernel its scalar twin.
        Assert.True(GgmlReference.CpuAvailable, "libggml-cpu not found in this process");
        var rng = new Random(4242);
        var par = new Parallelism(2);
        foreach (int nb in new[] { 1, 3, 7, 13 })
        {
            const int rows = 29, tokens = 5;
            int cols = 32 * nb, rowBytes = 34 * nb;
            var data = QuantTestData.RandomBlocks(GgmlType.Q8_0, rows * nb, rng);
            for (int b = 0; b < rows * nb; b += 3) data[b * 34 + 2 + rng.Next(32)] = 0x80;
            var w = WeightMatrix.FromBytes("w", rows, cols, GgmlType.Q8_0, data);
            w.LlamaCppSumOrder = true;
            var x = Activations(tokens * cols, rng);
            var vec = new float[rows];
            w.MatVec(x.AsSpan(0, cols), vec, par);
            var vecRows = new float[tokens * rows];
            w.MatVecRows(x, vecRows, tokens, par);
            var mm = new float[tokens * rows];
            w.MatMul(x, mm, tokens, par);
            var xq = new byte[rowBytes];
            int ordinary = 0;
            for (int t = 0; t < tokens; t++)
            {
                GgmlReference.CpuQuantizeActivations(GgmlType.Q8_0, x.AsSpan(t * cols, cols), xq);
                for (int r = 0; r < rows; r++)
                {
                    float theirs = GgmlReference.CpuVecDot(GgmlType.Q8_0, cols, data.AsSpan(r * rowBytes, rowBytes), xq);
                    Assert.Equal(BitConverter.SingleToInt32Bits(theirs), BitConverter.SingleToInt32Bits(mm[t * rows + r]));
                    Assert.Equal(BitConverter.SingleToInt32Bits(theirs), BitConverter.SingleToInt32Bits(vecRows[t * rows + r]));
                    if (t == 0) Assert.Equal(BitConverter.SingleToInt32Bits(theirs), BitConverter.SingleToInt32Bits(vec[r]));
                    fixed (byte* pw = data)
                    fixed (byte* px = xq)
                    {
                        float scalar = Q8Dot.DotQ8_0LlamaCppOrderScalar(pw + r * rowBytes, px, nb);
                        Assert.Equal(BitConverter.SingleToInt32Bits(theirs), BitConverter.SingleToInt32Bits(scalar));
                        if (Q8Dot.Dot(GgmlType.Q8_0, pw + r * rowBytes, px, nb) != theirs) ordinary++;
                    }
                }
            }
            output.WriteLine($"{nb} blocks: {ordinary} of {rows * tokens} default-order dots differ from ggml's in the last bits");
        }
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.IQ4_NL)]
    public void IntegerDotMatchesScalarReference(GgmlType weight)
    {
        var rng = new Random(500 + (int)weight);
        foreach (int nb in new[] { 1, 2, 3, 7, 13 })
        {
            int n = 32 * nb;
            var data = QuantTestData.RandomBlocks(weight, nb, rng);
            if (weight == GgmlType.Q8_0) // codes -128 are legal in a file; the sign trick must survive them
                for (int b = 0; b < nb; b++) data[b * 34 + 2 + rng.Next(32)] = 0x80;
            var x = Activations(n, rng);
            var xq = new byte[GgmlTypeInfo.RowBytes(GgmlType.Q8_0, n)];
            ActivationQuant.Quantize(GgmlType.Q8_0, x, xq);
            var deq = new float[n];
            QuantFormats.Dequantize(weight, data, deq);
            var xr = new float[n];
            ActivationQuant.Decode(GgmlType.Q8_0, xq, xr);
            var (d, mag) = QuantTestData.DoubleDot(deq, xr);
            fixed (byte* pw = data)
            fixed (byte* px = xq)
            {
                float scalar = Q8Dot.DotScalar(weight, pw, px, nb);
                float fast = Q8Dot.Dot(weight, pw, px, nb);             // AVX-512BW where the machine has it
                float avx2 = Q8Dot.DotAvx2OrScalar(weight, pw, px, nb);  // the AVX2 kernel
                Assert.True(Math.Abs(scalar - d) <= 1e-6 * mag, $"{weight} {nb} blocks: scalar {scalar} vs double {d}");
                Assert.True(Math.Abs(fast - d) <= 1e-6 * mag, $"{weight} {nb} blocks: fast {fast} vs double {d}");
                Assert.True(Math.Abs(avx2 - d) <= 1e-6 * mag, $"{weight} {nb} blocks: avx2 {avx2} vs double {d}");
            }
        }
    }

    [Fact]
    public void ExactActivationsFollowsSlicesAndModels()
    {
        var rng = new Random(7);
        var w = WeightMatrix.FromBytes("w", 8, 64, GgmlType.Q8_0, QuantTestData.RandomBlocks(GgmlType.Q8_0, 16, rng));
        Assert.Equal(GgmlType.Q8_0, w.ActivationType);
        w.ExactActivations = true;
        Assert.Null(w.ActivationType);
        Assert.True(w.SliceRows("half", 4, 4).ExactActivations);
        w.LlamaCppSumOrder = true;
        Assert.True(w.SliceRows("half", 4, 4).LlamaCppSumOrder);
        Assert.Null(WeightMatrix.FromFloats("f", 2, 3, new float[6]).ActivationType);
        Assert.Throws<NotSupportedException>(() => ActivationQuant.Quantize(GgmlType.Q4_0, new float[32], new byte[64]));
        Assert.Throws<ArgumentException>(() => ActivationQuant.Quantize(GgmlType.Q8_K, new float[255], new byte[292]));
    }
}
