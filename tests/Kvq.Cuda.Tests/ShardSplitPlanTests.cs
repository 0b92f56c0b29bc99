using Kvq.Cuda.Distributed;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Tests;

/// <summary>The split plans of a sharded sequence's attention calls (host only): where the shard boundaries fall on the
/// unsharded split boundaries, the shards run exactly the unsharded splits (what makes the sharded output the unsharded
/// output bit for bit); elsewhere each shard's splits cover its tokens, and no plan needs more room than allocated.</summary>
public class ShardSplitPlanTests
{
    private const int States = CudaKvSequence.MaxSplitStates;

    /// <summary>The global token ranges [from, to) of every split of every shard, in merge order (shard, then split).</summary>
    private static List<(long From, long To)> Ranges(ShardSplitPlan plan, ShardLayout layout)
    {
        var r = new List<(long, long)>();
        for (int s = 0; s < layout.Shards; s++)
            if (plan.Splits[s] is { } sp)
                for (int i = 0; i < sp.Splits; i++)
                    r.Add((layout.First[s] + (long)i * sp.PerSplit, layout.First[s] + (long)(i + 1) * sp.PerSplit));
        return r;
    }

    [Theory]
    // shard capacities (a string: the AOT GPU runner takes plain values), tokens, query rows, KV heads, SMs
    [InlineData("256,512,256,256", 990, 30, 2, 132)]    // books-19m's last prompt chunk: 8 splits of 128
    [InlineData("256,512,256,256", 960, 48, 2, 132)]    // a 48-row chunk: 4 splits of 256
    [InlineData("512,512", 1001, 1, 2, 132)]              // decode: one 128-token split per tile
    [InlineData("1024,1024,1024,1024", 3000, 1, 32, 132)]
    [InlineData("256,256,256,256,256,256,256,256", 700, 37, 2, 114)]   // shards 3-7 hold nothing yet
    public void AlignedShardsRunTheUnshardedSplits(string caps, long tokens, int rows, int kvHeads, int sms)
    {
        var layout = new ShardLayout(caps.Split(',').Select(int.Parse).ToArray());
        var plan = ShardSplitPlan.For(layout, tokens, rows, kvHeads, sms, States);
        var whole = AttentionSplit.For(tokens, rows, kvHeads, sms, States);
        Assert.True(plan.Aligned, plan.ToString());
        Assert.Equal(whole, plan.Unsharded);
        var want = Enumerable.Range(0, whole.Splits).Select(i => ((long)i * whole.PerSplit, (long)(i + 1) * whole.PerSplit)).ToList();
        // As text: xunit's collection comparer for value tuples needs MakeGenericMethod, which the AOT GPU runner lacks.
        Assert.Equal(string.Join(' ', want), string.Join(' ', Ranges(plan, layout)));
        for (int s = 0; s < layout.Shards; s++)
        {
            Assert.Equal(tokens - layout.First[s], plan.Counts[s]);
            Assert.Equal(layout.First[s] < tokens, plan.Splits[s] != null);
            if (plan.Splits[s] is { } sp) Assert.Equal(plan.Stride, sp.PartStride);
        }
    }

    [Fact]
    public void AShardBoundaryInsideAnUnshardedSplitIsUnaligned()
    {
        // 48 rows over 880 tokens on 132 SMs with 2 KV heads: the unsharded plan takes 4 splits of 256 tokens; a boundary at
        // 128 or 640 falls inside one. Each shard then covers its own tokens: the full ones exactly to their end; the
        // last shard holds none yet.
        var layout = new ShardLayout([128, 512, 256, 128]);
        var plan = ShardSplitPlan.For(layout, 880, 48, 2, 132, States);
        Assert.Equal(new AttentionSplit(4, 256), plan.Unsharded);
        Assert.False(plan.Aligned);
        var r = Ranges(plan, layout);
        Assert.Equal(0, r[0].From);
        Assert.Equal(640, r.Where(x => x.From < 640).Max(x => x.To));   // shards 0 and 1 end at shard 1's last token
        Assert.True(r[^1].To >= 880 && r[^1].From < 880);
        Assert.Null(plan.Splits[3]);
    }

    [Fact]
    public void EveryPlanCoversTheTokensAndFitsItsRoom()
    {
        // Random layouts of whole blocks, every few token counts, rows up to the chunk size: each shard's splits cover the
        // tokens it holds (a shard before the newest tokens: exactly to its end; the newest: past its last token, with no
        // split that starts beyond it), aligned plans are the unsharded splits, and rows x slots stay within SlotsPerPart.
        var rng = new Random(TestSeedsOf(nameof(EveryPlanCoversTheTokensAndFitsItsRoom)));
        int checkedPlans = 0, aligned = 0;
        for (int trial = 0; trial < 60; trial++)
        {
            int shards = rng.Next(1, 9), kvHeads = new[] { 1, 2, 4, 8, 32 }[rng.Next(5)], sms = new[] { 132, 114, 78 }[rng.Next(3)];
            int maxRows = new[] { 1, 16, 48, 64 }[rng.Next(4)];
            var layout = new ShardLayout(Enumerable.Range(0, shards).Select(_ => 128 * rng.Next(1, 12)).ToArray());
            long room = ShardSplitPlan.SlotsPerPart(maxRows, kvHeads, sms, States);
            for (long tokens = 1; tokens <= layout.Total; tokens += rng.Next(1, 97))
            {
                int rows = (int)Math.Min(tokens, rng.Next(1, maxRows + 1));
                var plan = ShardSplitPlan.For(layout, tokens, rows, kvHeads, sms, States);
                Assert.True((long)rows * plan.Stride <= room, $"{layout}, {tokens} tokens, {rows} rows: {plan} needs {rows} x {plan.Stride} > {room}");
                for (int s = 0; s < layout.Shards; s++)
                {
                    long held = Math.Clamp(tokens - layout.First[s], 0, layout.Capacity[s]);
                    if (held == 0) { Assert.Null(plan.Splits[s]); continue; }
                    var sp = plan.Splits[s]!.Value;
                    Assert.Equal(0, sp.PerSplit % 128);
                    Assert.True((long)(sp.Splits - 1) * sp.PerSplit < held, $"{layout} shard {s}: {plan} has a split past its {held} tokens");
                    if (tokens > layout.First[s] + layout.Capacity[s])
                        Assert.Equal(layout.Capacity[s], (long)sp.Splits * sp.PerSplit);   // full: the ranges end at its end
                    else Assert.True((long)sp.Splits * sp.PerSplit >= held);
                }
                if (plan.Aligned)
                {
                    aligned++;
                    var w = plan.Unsharded;
                    Assert.Equal(string.Join(' ', Enumerable.Range(0, w.Splits).Select(i => ((long)i * w.PerSplit, (long)(i + 1) * w.PerSplit))), string.Join(' ', Ranges(plan, layout)));
                }
                checkedPlans++;
            }
        }
        Assert.True(aligned > 0 && aligned < checkedPlans, $"{aligned} of {checkedPlans} plans aligned");
    }

    private static int TestSeedsOf(string name) => name.Aggregate(17, (h, c) => h * 31 + c);

    [Fact]
    public void OverSeveralGpusEachShardFillsItsOwn()
    {
        // Aligned (the unsharded plan: 14 splits of 256 tokens), but one shard per GPU: each takes the plan of its own
        // tokens (one split per 128-token tile here) instead of its 2 to 4 unsharded splits.
        var layout = new ShardLayout([1024, 1024, 1024, 1024]);
        var one = ShardSplitPlan.For(layout, 3500, 1, 32, 132, States);
        var many = ShardSplitPlan.For(layout, 3500, 1, 32, 132, States, unshardedSplits: false);
        Assert.Equal(new AttentionSplit(14, 256), one.Unsharded);
        Assert.True(one.Aligned);
        Assert.False(many.Aligned);
        Assert.Equal([4, 4, 4, 2], one.Splits.Select(s => s!.Value.Splits).ToArray());
        Assert.Equal([8, 8, 8, 4], many.Splits.Select(s => s!.Value.Splits).ToArray());
    }

    [Fact]
    public void BadCallsAreRefused()
    {
        var layout = new ShardLayout([128, 256]);
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardSplitPlan.For(layout, 385, 1, 2, 132, States));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardSplitPlan.For(layout, 3, 4, 2, 132, States));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardSplitPlan.For(layout, 100, 0, 2, 132, States));
    }
}
