using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

/// <summary>
/// The byte layouts: blocks built by hand from the ggml-common.h struct descriptions (not from our decoder), whose
/// values are exact in float and so checked exactly; then random blocks decoded by ggml itself.
/// </summary>
public class QuantFormatsLayoutTests
{
    // ---- hand-built blocks: expected values computed from the layout description ----

    [Fact]
    public void Q4_0_LowNibblesAreValues0To15_HighNibbles16To31()
    {
        var b = new byte[18];
        QuantTestData.WriteHalf(b, 0, 0.5f);
        for (int j = 0; j < 16; j++) b[2 + j] = (byte)(j | ((15 - j) << 4));
        var expect = new float[32];
        for (int j = 0; j < 16; j++)
        {
            expect[j] = (j - 8) * 0.5f;
            expect[16 + j] = (15 - j - 8) * 0.5f;
        }
        AssertDecodes(GgmlType.Q4_0, b, expect);
    }

    [Fact]
    public void Q4_1_IsScaleTimesNibblePlusMin()
    {
        var b = new byte[20];
        QuantTestData.WriteHalf(b, 0, 0.25f);
        QuantTestData.WriteHalf(b, 2, -1f);
        for (int j = 0; j < 16; j++) b[4 + j] = (byte)(((j * 3) & 15) | ((j ^ 5) << 4));
        var expect = new float[32];
        for (int j = 0; j < 16; j++)
        {
            expect[j] = ((j * 3) & 15) * 0.25f - 1f;
            expect[16 + j] = (j ^ 5) * 0.25f - 1f;
        }
        AssertDecodes(GgmlType.Q4_1, b, expect);
    }

    [Fact]
    public void Q5_0_BitJOfQhIsTheFifthBitOfValueJ()
    {
        var b = new byte[22];
        QuantTestData.WriteHalf(b, 0, 1f);
        uint qh = 0xA5C3_5F09;
        BitConverter.TryWriteBytes(b.AsSpan(2, 4), qh);
        for (int j = 0; j < 16; j++) b[6 + j] = (byte)((j * 7 & 15) | ((j * 5 + 1 & 15) << 4));
        var expect = new float[32];
        for (int j = 0; j < 16; j++)
        {
            expect[j] = ((j * 7 & 15) | (int)((qh >> j) & 1) << 4) - 16;
            expect[16 + j] = ((j * 5 + 1 & 15) | (int)((qh >> (16 + j)) & 1) << 4) - 16;
        }
        AssertDecodes(GgmlType.Q5_0, b, expect);
    }

    [Fact]
    public void Q5_1_IsScaleTimesFiveBitsPlusMin()
    {
        var b = new byte[24];
        QuantTestData.WriteHalf(b, 0, 0.5f);
        QuantTestData.WriteHalf(b, 2, 2f);
        uint qh = 0x1234_FEDC;
        BitConverter.TryWriteBytes(b.AsSpan(4, 4), qh);
        for (int j = 0; j < 16; j++) b[8 + j] = (byte)(j | ((j * 9 & 15) << 4));
        var expect = new float[32];
        for (int j = 0; j < 16; j++)
        {
            expect[j] = (j | (int)((qh >> j) & 1) << 4) * 0.5f + 2f;
            expect[16 + j] = ((j * 9 & 15) | (int)((qh >> (16 + j)) & 1) << 4) * 0.5f + 2f;
        }
        AssertDecodes(GgmlType.Q5_1, b, expect);
    }

    [Fact]
    public void Q8_0_IsSignedBytesTimesScale()
    {
        var b = new byte[34];
        QuantTestData.WriteHalf(b, 0, 0.125f);
        var expect = new float[32];
        for (int j = 0; j < 32; j++)
        {
            sbyte q = (sbyte)(j * 8 - 128);
            b[2 + j] = (byte)q;
            expect[j] = q * 0.125f;
        }
        AssertDecodes(GgmlType.Q8_0, b, expect);
    }

    // Sub-block j of 8 (32 values each) has a 6-bit scale and a 6-bit min; high values exercise the packed top bits.
    private static readonly int[] KScales = [1, 17, 33, 63, 5, 20, 40, 62];
    private static readonly int[] KMins = [0, 16, 31, 48, 3, 19, 35, 60];

    /// <summary>The 12-byte scales/mins packing of Q4_K/Q5_K, written from the layout description.</summary>
    private static void PackScalesK4(byte[] b, int at)
    {
        for (int j = 0; j < 8; j++)
        {
            int sc = KScales[j], m = KMins[j];
            if (j < 4)
            {
                b[at + j] = (byte)sc;
                b[at + j + 4] = (byte)m;
            }
            else
            {
                b[at + j + 4] = (byte)((sc & 15) | ((m & 15) << 4));
                b[at + j - 4] |= (byte)((sc >> 4) << 6);
                b[at + j] |= (byte)((m >> 4) << 6);
            }
        }
    }

    [Fact]
    public void Q4_K_SubBlocksTakeAlternateNibblesOf32ByteChunks()
    {
        var b = new byte[144];
        QuantTestData.WriteHalf(b, 0, 1f);    // d
        QuantTestData.WriteHalf(b, 2, 0.5f);  // dmin
        PackScalesK4(b, 4);
        var expect = new float[256];
        for (int v = 0; v < 256; v++)
        {
            int j = v / 32, l = v % 32, q = (v * 7 + j) % 16;
            // Sub-block j lives in chunk j/2: low nibbles for even j, high nibbles for odd j.
            b[16 + 32 * (j / 2) + l] |= (byte)(j % 2 == 0 ? q : q << 4);
            expect[v] = 1f * KScales[j] * q - 0.5f * KMins[j];
        }
        AssertDecodes(GgmlType.Q4_K, b, expect);
    }

    [Fact]
    public void Q5_K_FifthBitOfSubBlockJIsBitJOfQh()
    {
        var b = new byte[176];
        QuantTestData.WriteHalf(b, 0, 0.5f);
        QuantTestData.WriteHalf(b, 2, 0.25f);
        PackScalesK4(b, 4);
        var expect = new float[256];
        for (int v = 0; v < 256; v++)
        {
            int j = v / 32, l = v % 32, q = (v * 11 + j) % 32;
            b[48 + 32 * (j / 2) + l] |= (byte)(j % 2 == 0 ? q & 15 : (q & 15) << 4);
            b[16 + l] |= (byte)((q >> 4) << j);
            expect[v] = 0.5f * KScales[j] * q - 0.25f * KMins[j];
        }
        AssertDecodes(GgmlType.Q5_K, b, expect);
    }

    [Fact]
    public void Q6_K_InterleavesQuartersAcrossQlAndQh()
    {
        var b = new byte[210];
        sbyte[] scales = [-3, 5, 7, -11, 13, 1, -1, 2, 127, -128, 4, -6, 9, 10, -12, 3];
        for (int g = 0; g < 16; g++) b[192 + g] = (byte)scales[g];
        QuantTestData.WriteHalf(b, 208, 0.25f);
        var expect = new float[256];
        for (int v = 0; v < 256; v++)
        {
            int q = (v * 5 + 3) % 64;
            int n = v / 128, r = v % 128, quarter = r / 32, l = r % 32;
            // Quarters 0,1 take low nibbles of ql[l], ql[l+32]; quarters 2,3 the high nibbles; qh[l] holds 2 bits of each.
            int qlIndex = 64 * n + l + (quarter % 2 == 1 ? 32 : 0);
            b[qlIndex] |= (byte)(quarter < 2 ? q & 15 : (q & 15) << 4);
            b[128 + 32 * n + l] |= (byte)((q >> 4) << (2 * quarter));
            expect[v] = 0.25f * scales[8 * n + r / 16] * (q - 32);
        }
        AssertDecodes(GgmlType.Q6_K, b, expect);
    }

    /// <summary>ggml-common.h's kvalues_iq4nl, written out here independently of the decoder's copy.</summary>
    private static readonly int[] Iq4Levels = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    [Fact]
    public void IQ4_NL_NibblesIndexTheNonLinearLevels()
    {
        var b = new byte[18];
        QuantTestData.WriteHalf(b, 0, -0.375f);
        for (int j = 0; j < 16; j++) b[2 + j] = (byte)(j | (((j * 11 + 4) & 15) << 4));
        var expect = new float[32];
        for (int j = 0; j < 16; j++)
        {
            expect[j] = -0.375f * Iq4Levels[j];
            expect[16 + j] = -0.375f * Iq4Levels[(j * 11 + 4) & 15];
        }
        AssertDecodes(GgmlType.IQ4_NL, b, expect);
    }

    [Fact]
    public void IQ4_XS_SixBitScalesSplitAcrossScalesLAndScalesH()
    {
        var b = new byte[136];
        QuantTestData.WriteHalf(b, 0, 0.25f);
        var ls = new int[8];
        ushort scalesH = 0;
        for (int ib = 0; ib < 8; ib++)
        {
            ls[ib] = ib == 0 ? 0 : ib == 1 ? 63 : (ib * 9 + 5) % 64; // extremes of the 6-bit range too
            b[4 + ib / 2] |= (byte)((ls[ib] & 15) << (4 * (ib % 2)));
            scalesH |= (ushort)((ls[ib] >> 4) << (2 * ib));
        }
        BitConverter.TryWriteBytes(b.AsSpan(2, 2), scalesH);
        var expect = new float[256];
        for (int v = 0; v < 256; v++)
        {
            int ib = v / 32, r = v % 32, code = (v * 7 + 3) % 16;
            // Sub-block ib owns qs[16ib .. 16ib+16): values 0-15 in the low nibbles, 16-31 in the high nibbles.
            b[8 + 16 * ib + r % 16] |= (byte)(r < 16 ? code : code << 4);
            expect[v] = 0.25f * (ls[ib] - 32) * Iq4Levels[code];
        }
        AssertDecodes(GgmlType.IQ4_XS, b, expect);
    }

    private static void AssertDecodes(GgmlType t, byte[] block, float[] expect)
    {
        var got = new float[expect.Length];
        QuantFormats.Dequantize(t, block, got);
        for (int i = 0; i < expect.Length; i++)
            Assert.True(expect[i] == got[i], $"{t} value {i}: expected {expect[i]}, decoded {got[i]}");
        // Two blocks in a row: the second decodes the same (block stride = type size).
        var two = new byte[block.Length * 2];
        block.CopyTo(two, 0);
        block.CopyTo(two, block.Length);
        var got2 = new float[expect.Length * 2];
        QuantFormats.Dequantize(t, two, got2);
        Assert.Equal(expect, got2[expect.Length..]);
        if (OperatingSystem.IsLinux()) // ggml's decoder too (elsewhere the ggml tests below show as skipped)
        {
            Assert.True(GgmlReference.Available, "libggml-base was not found in this process");
            var g = new float[expect.Length];
            GgmlReference.Dequantize(t, block, g);
            Assert.Equal(expect, g);
        }
    }

    [Fact]
    public void ScaleConversionIsExactForEveryF16()
    {
        for (int h = 0; h < 65536; h++)
        {
            float expect = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float got = QuantFormats.HalfToSingle((ushort)h);
            if (float.IsNaN(expect)) Assert.True(float.IsNaN(got), $"0x{h:X4}");
            else Assert.True(BitConverter.SingleToUInt32Bits(expect) == BitConverter.SingleToUInt32Bits(got),
                $"f16 0x{h:X4}: expected {expect}, got {got}");
        }
    }

    [Fact]
    public void ScaleEncodingRoundsToNearestEvenLikeHalf()
    {
        void Check(float f)
        {
            ushort expect = BitConverter.HalfToUInt16Bits((Half)f);
            ushort got = QuantFormats.SingleToHalf(f);
            if (float.IsNaN(f)) Assert.True(got == 0x7e00 || got == 0xfe00, $"NaN -> 0x{got:X4}");
            else Assert.True(expect == got, $"{f:R} (0x{BitConverter.SingleToUInt32Bits(f):X8}): expected 0x{expect:X4}, got 0x{got:X4}");
        }
        // Every f16 value, every midpoint between neighbours (the ties) and the floats just either side of them.
        for (int h = 0; h < 0x7c00; h++)
        {
            float a = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float b = h + 1 < 0x7c00 ? (float)BitConverter.UInt16BitsToHalf((ushort)(h + 1)) : 65520f;
            float mid = (float)(((double)a + b) / 2);
            foreach (var f in new[] { a, mid, MathF.BitDecrement(mid), MathF.BitIncrement(mid), MathF.BitIncrement(a) })
            {
                Check(f);
                Check(-f);
            }
        }
        var rng = new Random(10);
        for (int i = 0; i < 200_000; i++) Check(BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)));
        foreach (var f in new[] { 0f, -0f, 65504f, 65519.99f, 65520f, 65536f, 1e10f, float.PositiveInfinity, float.NegativeInfinity,
                     float.NaN, float.Epsilon, 1e-40f, 2.9802322e-8f, 2.9802326e-8f, 5.9604645e-8f, 6.097555e-5f, 6.1035156e-5f })
            Check(f);
    }

    // ---- ggml's own decoder on random blocks ----

    [LinuxTheory("ggml's libggml-base is found through /proc/self/maps")]
    [MemberData(nameof(QuantTestData.AllBlockTypes), MemberType = typeof(QuantTestData))]
    public void DequantizeIsBitIdenticalToGgml(GgmlType type)
    {
        Assert.True(GgmlReference.Available, "libggml-base was not found in this process");
        var rng = new Random(3000 + (int)type);
        foreach (int nb in new[] { 1, 3, 7, 16 })
        {
            int n = nb * GgmlTypeInfo.BlockSize(type);
            var blocks = QuantTestData.RandomBlocks(type, nb, rng);
            var ours = new float[n];
            var theirs = new float[n];
            QuantFormats.Dequantize(type, blocks, ours);
            GgmlReference.Dequantize(type, blocks, theirs);
            for (int i = 0; i < n; i++)
                Assert.True(BitConverter.SingleToInt32Bits(ours[i]) == BitConverter.SingleToInt32Bits(theirs[i]),
                    $"{type}, {nb} blocks, value {i}: ours {ours[i]}, ggml {theirs[i]}");
        }
    }
}
