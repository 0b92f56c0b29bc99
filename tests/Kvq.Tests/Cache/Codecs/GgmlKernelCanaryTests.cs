using Kvq.Cache.Attention;
using Kvq.Cache.Codecs;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// q8_0's fused score kernels and the q8_0 / q4_0 block decoders write through refs, so a loop that runs one step too
/// far (<c>i &lt;= nq</c>) or one that never clears its output (<c>i &gt; nq</c>, over an output that happened to be zero)
/// goes unseen by value tests on arrays of their own (session 12's Stryker run: such mutants survived in
/// <c>ScoresV128</c>/<c>ScoresV256</c>). Here each runs on a slice of a larger buffer: the slack before and after
/// holds a random canary that must come back bit for bit, the output's own range starts as random values (never zeros),
/// the query's slack holds large values (a row read too many would show), and the result must match the reference.
/// </summary>
public class GgmlKernelCanaryTests
{
    private const int Slack = 48;   // floats each side: more than the widest overrun (count scores of one extra row)
    private const int BlockTokens = 7;

    private static float[] Canary(int n, Random rng)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (rng.NextSingle() - 0.5f) * 1000f;
        return a;
    }

    private static void AssertSlackUntouched(float[] before, float[] after, int start, int length, string what)
    {
        for (int i = 0; i < start; i++)
            Assert.True(BitConverter.SingleToInt32Bits(before[i]) == BitConverter.SingleToInt32Bits(after[i]), $"{what}: wrote {start - i} before its output");
        for (int i = start + length; i < after.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(before[i]) == BitConverter.SingleToInt32Bits(after[i]), $"{what}: wrote {i - start - length} past its output of {length}");
    }

    public static TheoryData<string> ScoreKernels() => ["V128", "V256", "Scores"];

    [Theory, MemberData(nameof(ScoreKernels))]
    public void Q8ScoresWriteOnlyTheirScoresAndOverwriteThemAll(string kernel)
    {
        foreach (int hd in new[] { 32, 96, 128 })
            foreach (int count in new[] { 1, 3, BlockTokens })
                foreach (int nq in new[] { 1, 2, 5 })
                {
                    int seed = TestSeeds.Of(nameof(Q8ScoresWriteOnlyTheirScoresAndOverwriteThemAll), kernel, hd, count, nq);
                    var rng = new Random(seed);
                    var codec = new Q8_0Codec(BlockTokens, hd);
                    var block = CodecTestData.Encode(codec, CodecTestData.Tokens(BlockTokens, hd, seed), seed);
                    var q = CodecTestData.Tokens(nq, hd, seed + 1);
                    var tile = new float[BlockTokens * hd];
                    codec.DecodeBlockReference(block, count, tile);
                    var expected = new float[nq * count];
                    TileMath.ScoresReference(tile, count, hd, q, nq, expected);

                    var query = Canary(Slack + q.Length + Slack, rng);
                    q.CopyTo(query, Slack);
                    var scores = Canary(Slack + expected.Length + Slack, rng);   // the scores' own range too
                    var before = (float[])scores.Clone();
                    var qs = query.AsSpan(Slack, q.Length);
                    var out_ = scores.AsSpan(Slack, expected.Length);
                    switch (kernel)
                    {
                        case "V128": codec.ScoresV128(block, count, qs, nq, out_); break;
                        case "V256": codec.ScoresV256(block, count, qs, nq, out_); break;
                        default: codec.Scores(block, count, qs, nq, out_, new float[count * hd]); break;
                    }

                    string what = $"q8_0 {kernel}, head dim {hd}, {count} keys, {nq} queries (seed {seed})";
                    AssertSlackUntouched(before, scores, Slack, expected.Length, what);
                    for (int i = 0; i < expected.Length; i++)
                    {
                        int r = i / count, j = i % count;
                        double mag = 0;
                        for (int k = 0; k < hd; k++) mag += Math.Abs(q[r * hd + k] * tile[j * hd + k]);
                        Assert.True(Math.Abs(expected[i] - out_[i]) <= 1e-4 * mag, $"{what}: score[{r},{j}] {out_[i]} vs reference {expected[i]}");
                    }
                }
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void DecodersWriteOnlyTheirTokensAndRefuseShortBuffers(string format)
    {
        foreach (int hd in new[] { 32, 96 })
            foreach (int count in new[] { 1, 4, BlockTokens })
            {
                int seed = TestSeeds.Of(nameof(DecodersWriteOnlyTheirTokensAndRefuseShortBuffers), format, hd, count);
                var rng = new Random(seed);
                KvCodec codec = format == "q8_0" ? new Q8_0Codec(BlockTokens, hd) : new Q4_0Codec(BlockTokens, hd);
                var block = CodecTestData.Encode(codec, CodecTestData.Tokens(BlockTokens, hd, seed), seed);
                var expected = new float[count * hd];
                if (codec is Q8_0Codec q8) q8.DecodeBlockReference(block, count, expected);
                else ((Q4_0Codec)codec).DecodeBlockReference(block, count, expected);

                var dst = Canary(Slack + expected.Length + Slack, rng);
                var before = (float[])dst.Clone();
                codec.DecodeBlock(block, count, dst.AsSpan(Slack, expected.Length));
                string what = $"{format} DecodeBlock, head dim {hd}, {count} tokens (seed {seed})";
                AssertSlackUntouched(before, dst, Slack, expected.Length, what);
                Assert.True(expected.AsSpan().SequenceEqual(dst.AsSpan(Slack, expected.Length)), $"{what}: differs from the reference decode");

                // A destination one value short, or a block one byte short of the tokens asked for, is refused (not
                // written past or read past).
                Assert.ThrowsAny<ArgumentException>(() => codec.DecodeBlock(block, count, new float[Slack + count * hd].AsSpan(Slack, count * hd - 1)));
                int tokenBytes = hd / 32 * (format == "q8_0" ? 34 : 18);   // ggml blocks of 32 values: f16 scale + codes
                Assert.ThrowsAny<ArgumentException>(() => codec.DecodeBlock(block.AsSpan(0, count * tokenBytes - 1), count, new float[count * hd]));
            }
    }
}
