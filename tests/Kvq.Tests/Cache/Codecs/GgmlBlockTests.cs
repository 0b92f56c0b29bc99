using System.Runtime.InteropServices;
using Kvq.Cache.Codecs;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// q8_0 / q4_0 blocks are byte-identical to llama.cpp's: against ggml's formulas restated here, and against ggml's
/// own quantize_row_q8_0_ref / quantize_row_q4_0_ref and dequantize_row_* from the libggml-base that the llama.cpp
/// peer loads.
/// </summary>
public class GgmlBlockTests
{
    /// <summary>Vectors of 128 values (4 ggml blocks each): random, rounding ties, sign ties, constant, zero, tiny.</summary>
    public static IEnumerable<object[]> Vectors()
    {
        yield return ["gaussian+outliers", CodecTestData.Tokens(1, 128, 21)];
        yield return ["gaussian", CodecTestData.Tokens(3, 128, 22).AsSpan(128, 128).ToArray()];
        var ties = new float[128];
        // Block 0: max|x| = 127 -> q8_0 d = 1, so k + 0.5 is a rounding tie (ggml rounds away from zero).
        // Block 1: first max-magnitude value -8 -> q4_0 d = 1, ties at k + 0.5 (ggml rounds half up via +8.5 and a
        // truncating cast), and +8 clamps to code 15.
        for (int j = 0; j < 32; j++) ties[j] = j == 0 ? 127f : (j - 16) + 0.5f;
        for (int j = 0; j < 32; j++) ties[32 + j] = j == 0 ? -8f : j == 31 ? 8f : (j - 16) * 0.5f;
        // Block 2: +8 and -8 both present, +8 first (q4_0 keeps the first: d = -1).
        for (int j = 0; j < 32; j++) ties[64 + j] = j == 3 ? 8f : j == 20 ? -8f : (j % 7) - 3.25f;
        // Block 3: constant.
        for (int j = 0; j < 32; j++) ties[96 + j] = -2.75f;
        yield return ["ties", ties];
        var edge = new float[128];
        // Block 0: all zero (d = 0, id = 0). Block 1: tiny (f16 subnormal scale). Blocks 2-3: large.
        for (int j = 0; j < 32; j++) edge[32 + j] = (j - 15) * 1e-7f;
        for (int j = 64; j < 128; j++) edge[j] = (j * 37 % 101 - 50) * 13.7f;
        yield return ["edges", edge];
    }

    [Theory, MemberData(nameof(Vectors))]
    public void Q8_0MatchesGgmlFormulas(string what, float[] x)
    {
        var codec = new Q8_0Codec(4, x.Length);
        var block = new byte[codec.BlockBytes];
        codec.EncodeToken(x, block, 2);
        Assert.True(FormulaQ8_0(x).AsSpan().SequenceEqual(block.AsSpan(2 * 34 * 4, 34 * 4)), what);
    }

    [Theory, MemberData(nameof(Vectors))]
    public void Q4_0MatchesGgmlFormulas(string what, float[] x)
    {
        var codec = new Q4_0Codec(4, x.Length);
        var block = new byte[codec.BlockBytes];
        codec.EncodeToken(x, block, 1);
        Assert.True(FormulaQ4_0(x).AsSpan().SequenceEqual(block.AsSpan(18 * 4, 18 * 4)), what);
    }

    /// <summary>
    /// The error bounds the codec matrix checks round trips against (<see cref="Q8_0Codec.MaxAbsError"/>,
    /// <see cref="Q4_0Codec.MaxAbsError"/>) hold on every vector and are met exactly where the error is known: q8_0 with
    /// d = 1 (an f16) at the ties k + 0.5 (error d/2), q4_0 where +-8 clamps to code 15 (error |d|), with the first of two
    /// equal magnitudes setting the sign of d as the encoder does, and an all-zero group (d = 0: bound and error 0).
    /// </summary>
    [Theory, MemberData(nameof(Vectors))]
    public void BoundsHoldAndAreMetWhereTheErrorIsExact(string what, float[] x)
    {
        foreach (var codec in new KvCodec[] { new Q8_0Codec(1, x.Length), new Q4_0Codec(1, x.Length) })
        {
            var block = new byte[codec.BlockBytes];
            codec.EncodeToken(x, block, 0);
            var y = new float[x.Length];
            codec.DecodeBlock(block, 1, y);
            var bound = new float[x.Length];
            ((IKvCodecReference)codec).MaxAbsError(x, bound);
            for (int i = 0; i < x.Length; i++)
                Assert.True(MathF.Abs(y[i] - x[i]) <= bound[i], $"{codec.Name} {what} value {i}: {x[i]} -> {y[i]}, bound {bound[i]}");
            if (what == "edges") Assert.All(bound.AsSpan(0, 32).ToArray(), b => Assert.Equal(0f, b));   // all-zero group
            if (what != "ties") continue;
            // The slack beyond the exact error is the f32 term alone (4e-7 of the group's largest magnitude).
            void Exact(int i, float error, float amax) =>
                Assert.True(MathF.Abs(y[i] - x[i]) == error && bound[i] >= error && bound[i] <= error + 4e-7f * amax * 1.01f,
                    $"{codec.Name} value {i}: {x[i]} -> {y[i]} (error {error} expected), bound {bound[i]}");
            if (codec is Q8_0Codec)
                for (int j = 1; j < 32; j++) Exact(j, 0.5f, 127f);         // block 0: d = 1, every value a tie
            else
            {
                Exact(32 + 31, 1f, 8f);                                      // block 1: -8 first, d = 1, +8 -> 7
                Exact(64 + 20, 1f, 8f);                                      // block 2: +8 first, d = -1, -8 -> -7
            }
        }
    }

    [Fact]
    public void TiesRoundAsGgmlDoes()
    {
        var x = Vectors().Single(v => (string)v[0] == "ties")[1] as float[];
        var q8 = FormulaQ8_0(x!);
        // Block 0, d = 1: value j = (j - 16) + 0.5.
        Assert.Equal(-15, (sbyte)q8[2 + 1]);  // -14.5 -> -15 (away from zero; half to even would give -14)
        Assert.Equal(-14, (sbyte)q8[2 + 2]);  // -13.5 -> -14
        Assert.Equal(1, (sbyte)q8[2 + 16]);   // 0.5 -> 1 (half to even would give 0)
        var q4 = FormulaQ4_0(x!);
        // Block 1, d = 1: value j = (j - 16) * 0.5; j = 17 is 0.5 -> code floor(9.0) = 9; j = 15 is -0.5 -> 8 (half up).
        Assert.Equal(9, q4[18 + 2 + 1] >> 4);
        Assert.Equal(8, q4[18 + 2 + 15] & 0x0F);
        Assert.Equal(15, q4[18 + 2 + 15] >> 4); // j = 31 is +8 -> 16.5 -> clamped to 15
    }

    [Theory, MemberData(nameof(Vectors))]
    public unsafe void Q8_0AndQ4_0BytesEqualGgmlLibrary(string what, float[] x)
    {
        var ggml = GgmlLibrary.Value;
        var q8 = new byte[34 * 4];
        var q4 = new byte[18 * 4];
        fixed (float* px = x)
        fixed (byte* p8 = q8)
        fixed (byte* p4 = q4)
        {
            ggml.QuantizeQ8_0(px, p8, x.Length);
            ggml.QuantizeQ4_0(px, p4, x.Length);
        }
        var c8 = new Q8_0Codec(1, x.Length);
        var b8 = new byte[c8.BlockBytes];
        c8.EncodeToken(x, b8, 0);
        Assert.True(q8.AsSpan().SequenceEqual(b8), $"q8_0 {what}");
        var c4 = new Q4_0Codec(1, x.Length);
        var b4 = new byte[c4.BlockBytes];
        c4.EncodeToken(x, b4, 0);
        Assert.True(q4.AsSpan().SequenceEqual(b4), $"q4_0 {what}");

        // And decoding agrees with ggml's dequantize_row_* bit for bit.
        var d8 = new float[x.Length];
        var d4 = new float[x.Length];
        fixed (byte* p8 = q8)
        fixed (byte* p4 = q4)
        fixed (float* pd8 = d8)
        fixed (float* pd4 = d4)
        {
            ggml.DequantizeQ8_0(p8, pd8, x.Length);
            ggml.DequantizeQ4_0(p4, pd4, x.Length);
        }
        var o8 = new float[x.Length];
        var o4 = new float[x.Length];
        c8.DecodeBlock(b8, 1, o8);
        c4.DecodeBlock(b4, 1, o4);
        Assert.Equal(d8, o8);
        Assert.Equal(d4, o4);
    }

    /// <summary>The codecs' own block code agrees with Kvq.Tensors.Quant.QuantFormats (the weight-side implementation).</summary>
    [Theory, MemberData(nameof(Vectors))]
    public void Q8_0AndQ4_0AgreeWithQuantFormats(string what, float[] x)
    {
        foreach (var (type, codec) in new (Kvq.Tensors.GgmlType, KvCodec)[] { (Kvq.Tensors.GgmlType.Q8_0, new Q8_0Codec(1, x.Length)), (Kvq.Tensors.GgmlType.Q4_0, new Q4_0Codec(1, x.Length)) })
        {
            var expected = new byte[codec.BlockBytes];
            Kvq.Tensors.Quant.QuantFormats.Quantize(type, x, expected);
            var block = new byte[codec.BlockBytes];
            codec.EncodeToken(x, block, 0);
            Assert.True(expected.AsSpan().SequenceEqual(block), $"{type} {what}");
            var a = new float[x.Length];
            var b = new float[x.Length];
            Kvq.Tensors.Quant.QuantFormats.Dequantize(type, block, a);
            codec.DecodeBlock(block, 1, b);
            Assert.Equal(a, b);
        }
    }

    // ggml's formulas, restated independently of the codecs.
    private static byte[] FormulaQ8_0(float[] x)
    {
        var y = new byte[x.Length / 32 * 34];
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[b * 32 + j]));
            float d = amax / 127f, id = d == 0 ? 0 : 1f / d;
            BitConverter.TryWriteBytes(y.AsSpan(b * 34), BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 32; j++)
            {
                float v = x[b * 32 + j] * id;
                y[b * 34 + 2 + j] = unchecked((byte)(sbyte)Math.Round((double)v, MidpointRounding.AwayFromZero));
            }
        }
        return y;
    }

    private static byte[] FormulaQ4_0(float[] x)
    {
        var y = new byte[x.Length / 32 * 18];
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (Math.Abs(x[b * 32 + j]) > amax) { amax = Math.Abs(x[b * 32 + j]); max = x[b * 32 + j]; }
            float d = max / -8f, id = d == 0 ? 0 : 1f / d;
            BitConverter.TryWriteBytes(y.AsSpan(b * 18), BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 16; j++)
            {
                float a = x[b * 32 + j] * id + 8.5f, c = x[b * 32 + 16 + j] * id + 8.5f;
                int lo = Math.Min(15, (int)Math.Floor((double)a)), hi = Math.Min(15, (int)Math.Floor((double)c));
                y[b * 18 + 2 + j] = (byte)(lo | hi << 4);
            }
        }
        return y;
    }

    /// <summary>q8_0's fused scores of no keys or no query rows write nothing and read nothing (the SIMD kernels index
    /// the last key and query row up front, so without the early return they would run off the spans).</summary>
    [Fact]
    public void Q8_0ScoresOfNoKeysOrNoRowsWriteNothing()
    {
        var codec = new Q8_0Codec(4, 64);
        var block = CodecTestData.Encode(codec, CodecTestData.Tokens(4, 64, 31), 31);
        var q = CodecTestData.Tokens(3, 64, 32);
        var tile = new float[4 * 64];
        foreach (var (count, nq) in new[] { (0, 1), (0, 3), (3, 0), (0, 0) })
        {
            var scores = Enumerable.Repeat(float.NaN, 12).ToArray();
            codec.Scores(block, count, q.AsSpan(0, nq * 64), nq, scores, tile);
            Assert.All(scores, s => Assert.True(float.IsNaN(s), $"{count} keys, {nq} rows: a score was written"));
        }
        // One key, one row: the dot product of the decoded key and the query.
        var one = new float[1];
        codec.Scores(block, 1, q.AsSpan(0, 64), 1, one, tile);
        codec.DecodeBlock(block, 1, tile);
        double dot = 0;
        for (int k = 0; k < 64; k++) dot += (double)tile[k] * q[k];
        Assert.Equal(dot, one[0], 1e-3);
    }

    private static readonly Lazy<GgmlReference> GgmlLibrary = new(GgmlReference.Load);

    /// <summary>ggml's reference (de)quantizers from the libggml-base the llama.cpp peer has loaded into this process.</summary>
    private sealed unsafe class GgmlReference
    {
        public delegate* unmanaged<float*, byte*, long, void> QuantizeQ8_0;
        public delegate* unmanaged<float*, byte*, long, void> QuantizeQ4_0;
        public delegate* unmanaged<byte*, float*, long, void> DequantizeQ8_0;
        public delegate* unmanaged<byte*, float*, long, void> DequantizeQ4_0;

        public static GgmlReference Load()
        {
            _ = SharedModels.BooksLlamaCpp; // loads llama.cpp and, with it, libggml-base
            var path = File.ReadLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(f => f.Length >= 6 && Path.GetFileName(f[5]).StartsWith("libggml-base")).Select(f => f[5]).FirstOrDefault()
                ?? throw new InvalidOperationException("libggml-base is not loaded in this process (llama.cpp peer missing?)");
            var h = NativeLibrary.Load(path);
            return new GgmlReference
            {
                QuantizeQ8_0 = (delegate* unmanaged<float*, byte*, long, void>)NativeLibrary.GetExport(h, "quantize_row_q8_0_ref"),
                QuantizeQ4_0 = (delegate* unmanaged<float*, byte*, long, void>)NativeLibrary.GetExport(h, "quantize_row_q4_0_ref"),
                DequantizeQ8_0 = (delegate* unmanaged<byte*, float*, long, void>)NativeLibrary.GetExport(h, "dequantize_row_q8_0"),
                DequantizeQ4_0 = (delegate* unmanaged<byte*, float*, long, void>)NativeLibrary.GetExport(h, "dequantize_row_q4_0"),
            };
        }
    }
}
