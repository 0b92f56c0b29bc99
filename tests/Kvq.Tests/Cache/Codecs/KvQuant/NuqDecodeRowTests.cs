using Kvq.Cache.Codecs.KvQuant;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The one-pass unpack-and-look-up of a token's codes on its own (written for the codecs' mutation run): every length
/// from 1 to 70 (whole bytes, 3-byte groups of 8 codes and the code-by-code tail), one table per token (stride 0) and
/// one per channel (stride 2^B), against a bit-by-bit reading of the codes, nothing written past the row; tables and
/// buffers one short refused.
/// </summary>
public class NuqDecodeRowTests(ITestOutputHelper output)
{
    private static int Code(byte[] packed, int i, int bits)
    {
        int v = 0;
        for (int b = 0; b < bits; b++) v |= (packed[(i * bits + b) / 8] >> ((i * bits + b) % 8) & 1) << b;
        return v;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void RowIsTheTableEntryOfEachCode(int bits)
    {
        int seed = TestSeeds.Of(nameof(RowIsTheTableEntryOfEachCode), bits);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int levels = 1 << bits;
        for (int d = 1; d <= 70; d++)
            foreach (int stride in new[] { 0, levels })
            {
                var packed = new byte[NuqBits.Bytes(d, bits) + rng.Next(3)];   // a longer buffer is fine
                rng.NextBytes(packed);
                var lut = new float[(d - 1) * stride + levels];
                for (int i = 0; i < lut.Length; i++) lut[i] = (float)(rng.NextDouble() * 8 - 4);
                // The row is a slice with guard values after it: the decode writes through Unsafe.Add, so a write
                // past the row would not throw, only show here.
                var buffer = new float[d + 9];
                for (int i = d; i < buffer.Length; i++) buffer[i] = -1000 - i;
                var row = buffer.AsSpan(0, d);
                NuqDecode.Row(packed, bits, lut, stride, row);
                for (int c = 0; c < d; c++) Assert.Equal(lut[c * stride + Code(packed, c, bits)], row[c]);
                for (int i = d; i < buffer.Length; i++) Assert.Equal(-1000 - i, buffer[i]);
                Assert.Throws<ArgumentException>(() => NuqDecode.Row(packed, bits, lut.AsSpan(0, lut.Length - 1), stride, new float[d]));
                Assert.Throws<ArgumentException>(() => NuqDecode.Row(packed.AsSpan(0, NuqBits.Bytes(d, bits) - 1), bits, lut, stride, new float[d]));
            }
    }
}
