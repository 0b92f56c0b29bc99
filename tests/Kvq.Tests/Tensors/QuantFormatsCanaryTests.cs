using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

/// <summary>
/// The encoders write through pointers, so a loop that runs one step too far (<c>j &lt;= 32</c>, <c>i &lt;= nb</c>)
/// writes past the row into memory a value test never reads: each encoder here runs on a slice of a larger buffer
/// whose slack holds a random canary, which must come back untouched, and on a slice of a larger input whose slack
/// holds values large enough to change any scale they leak into. (Session 12's Stryker run: such mutants survived in
/// the q8_0 and q4_0 reference encoders.)
/// </summary>
public class QuantFormatsCanaryTests
{
    private const int Slack = 64;   // bytes of output, values of input, each side

    public static TheoryData<GgmlType, bool> Encoders()
    {
        var d = new TheoryData<GgmlType, bool>();
        foreach (var t in QuantTestData.EncodableTypes) d.Add(t, false);
        d.Add(GgmlType.Q8_0, true);
        d.Add(GgmlType.Q4_0, true);
        return d;
    }

    [Theory, MemberData(nameof(Encoders))]
    public void EncodersWriteOnlyTheirRowAndReadOnlyTheirValues(GgmlType type, bool simd)
    {
        foreach (int blocks in new[] { 1, 2, 3, 7 })
        {
            int seed = TestSeeds.Of(nameof(EncodersWriteOnlyTheirRowAndReadOnlyTheirValues), type, simd, blocks);
            var rng = new Random(seed);
            int n = blocks * 32, bytes = (int)GgmlTypeInfo.RowBytes(type, n);
            var x = QuantTestData.RandomGaussian(n, rng);
            var expected = new byte[bytes];
            QuantFormats.QuantizeReference(type, x, expected);   // exact-size arrays of its own

            var input = new float[Slack + n + Slack];
            for (int i = 0; i < input.Length; i++) input[i] = (rng.NextSingle() - 0.5f) * 2000f;
            x.CopyTo(input, Slack);
            var output = new byte[Slack + bytes + Slack];
            rng.NextBytes(output);
            var before = (byte[])output.Clone();

            var src = input.AsSpan(Slack, n);
            var dst = output.AsSpan(Slack, bytes);
            if (simd) QuantFormats.QuantizeVector256(type, src, dst);
            else QuantFormats.QuantizeReference(type, src, dst);

            string what = $"{type} {(simd ? "SIMD" : "reference")}, {blocks} blocks (seed {seed})";
            Assert.True(before.AsSpan(0, Slack).SequenceEqual(output.AsSpan(0, Slack)), $"{what}: wrote before its row");
            for (int i = Slack + bytes; i < output.Length; i++)
                Assert.True(before[i] == output[i], $"{what}: wrote byte {i - Slack - bytes} past its row of {bytes}");
            Assert.True(expected.AsSpan().SequenceEqual(dst), $"{what}: the row differs from the reference's on its own arrays");
        }
    }
}
