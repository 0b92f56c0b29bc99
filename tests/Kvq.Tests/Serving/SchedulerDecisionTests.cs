using Kvq.Cache;
using Kvq.Cache.Storage;
using Kvq.Model;
using Kvq.Serving;

namespace Kvq.Tests.Serving;

/// <summary>
/// The scheduler's decisions step by step under memory pressure, driven directly (no engine thread, so every run is
/// the same): a real model runs each step's plan as <see cref="InferenceEngine"/> does, and after each plan the test
/// checks what the scheduler decided against what it holds before it.
/// </summary>
public sealed class SchedulerDecisionTests
{
    private const int BlockBytes = 128 * 1024; // f16 books-19m: 32 tokens x 8 layers x 2 KV heads x 64 dims x 2 sides x 2 bytes

    /// <summary>
    /// Fourteen requests of odd lengths and three priorities on a pool of 22 blocks, all submitted before the first
    /// step, so preemptions are forced. Every step: no request is preempted and admitted (or swapped back in) in the
    /// same step, nor preempted twice, nor admitted and then preempted; every request admitted or resumed in a step ranks
    /// above (priority, then arrival) every request still waiting after it; the plan holds only running requests, each
    /// once, within the step's tokens; and the pool's bytes never pass the budget. At the end every request has exactly
    /// its lone greedy tokens. Swap with a small host tier also swaps some back with generated tokens still to recompute
    /// (it fell back to recompute once before). A decode reserve of 0 makes the admission check as tight as it gets.
    /// </summary>
    [Theory]
    [InlineData(PreemptionMode.Recompute, 32, null)]
    [InlineData(PreemptionMode.Recompute, 0, null)]
    [InlineData(PreemptionMode.Swap, 32, null)]
    [InlineData(PreemptionMode.Swap, 0, null)] // before the fix: request 5 swapped out, in and out again in step 21
    [InlineData(PreemptionMode.Swap, 0, 6L * BlockBytes)]
    [InlineData(PreemptionMode.Swap, 16, 3L * BlockBytes)]
    public void NoRequestIsPreemptedAndReadmittedInOneStep(PreemptionMode preemption, int reserve, long? swapHostBytes)
    {
        const int blocks = 22;
        var m = EngineFixtures.Books;
        var (prompts, maxTokens, priorities, expected) = Requests.Value;
        const int stepTokens = 96;
        var model = EngineFixtures.Model(m, stepTokens);
        var options = new EngineOptions
        {
            Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = blocks * (long)BlockBytes, DecodeReserveTokens = reserve, Preemption = preemption,
            SwapHostBytes = swapHostBytes,
        };
        var pool = new KvPool(model.KvShape, options.Kv, options.KvBudgetBytes, options.MaxRunning, options.PolicyChunkTokens);
        Assert.Equal(blocks, pool.Blocks);
        var snapshot = new EngineSnapshot(0, 0, 0, 0, 0, 0, 0, options.KvBudgetBytes, 0, 0, 0, 0);
        using var metrics = new EngineMetrics(() => snapshot, options.Kv.Name);
        using var swap = preemption == PreemptionMode.Swap ? new SwapSpace(pool.Cache.Plan, swapHostBytes ?? long.MaxValue) : null;
        var lostToBudget = new List<long>();
        var scheduler = new Scheduler(pool, options, stepTokens, metrics) { Swap = swap };
        scheduler.OutOfBudget = r =>
        {
            // As the engine ends such a request (length); none should outgrow this pool.
            lostToBudget.Add(r.Id);
            scheduler.Remove(r);
            r.Finish(FinishReason.Length);
        };
        var requests = prompts.Select((p, i) => new EngineRequest(i + 1, i + 1, EngineFixtures.Greedy(p, maxTokens[i], priorities[i]), m.Tokenizer)).ToArray();
        foreach (var r in requests) scheduler.Add(r);

        var before = new (RequestState State, int Preemptions)[requests.Length];
        var resumedFromSwap = 0;
        int steps = 0, preemptions = 0;
        var vocab = m.Weights.Config.VocabSize;
        var tokens = new int[stepTokens];
        var logits = new float[stepTokens * vocab];
        while (scheduler.HasWork)
        {
            Assert.True(++steps < 2000, $"no end after {steps} steps: {scheduler.Waiting} waiting, {scheduler.Running} running");
            for (int i = 0; i < requests.Length; i++) before[i] = (requests[i].State, requests[i].Preemptions);
            var swappedBefore = requests.Select(r => r.Swapped != null).ToArray();
            var plan = scheduler.Plan().ToArray();
            string Where(EngineRequest r) => $"step {steps} ({preemption}, reserve {reserve}: request {r.Id} (priority {r.Priority})";
            for (int i = 0; i < requests.Length; i++)
            {
                var r = requests[i];
                int preempted = r.Preemptions - before[i].Preemptions;
                preemptions += preempted;
                Assert.True(preempted <= 1, $"{Where(r)} was preempted {preempted} times in one step");
                if (preempted == 1)
                {
                    Assert.True(before[i].State == RequestState.Running, $"{Where(r)} was admitted and preempted in the same step");
                    Assert.True(r.State == RequestState.Waiting, $"{Where(r)} was preempted and readmitted in the same step" +
                                                                 (r.Kv != null && swap != null ? " (swapped out and back in)" : ""));
                }
                if (before[i].State == RequestState.Waiting && r.State == RequestState.Running)
                {
                    if (swappedBefore[i]) resumedFromSwap++;
                    // Readmission in rank order: nothing left waiting outranks a request that went in.
                    foreach (var w in requests)
                        Assert.False(w.State == RequestState.Waiting && Outranks(w, r),
                            $"{Where(r)} was admitted while request {w.Id} (priority {w.Priority}, preempted {w.Preemptions}x) kept waiting");
                }
            }
            Assert.True(plan.Length > 0, $"step {steps}: nothing planned with {scheduler.Waiting} waiting and {scheduler.Running} running");
            Assert.Equal(plan.Length, plan.Select(p => p.Request).Distinct().Count());
            Assert.All(plan, p => Assert.Equal(RequestState.Running, p.Request.State));
            int n = plan.Sum(p => p.Count);
            Assert.InRange(n, 1, stepTokens);

            // Run the step as the engine does.
            var segments = new BatchSegment[plan.Length];
            for (int i = 0, at = 0; i < plan.Length; i++)
            {
                var item = plan[i];
                item.Request.Tokens.CopyTo(item.Request.Computed, tokens, at, item.Count);
                segments[i] = new BatchSegment(item.Request.Kv!, at, item.Count, item.Decode, item.Logits);
                at += item.Count;
            }
            model.ForwardBatch(tokens.AsSpan(0, n), segments, logits);
            int row = 0;
            for (int i = 0; i < plan.Length; i++)
            {
                if (!segments[i].Logits) continue;
                var r = plan[i].Request;
                if (r.Accept(logits.AsSpan(row++ * vocab, vocab), m.Tokenizer, model.Config.ContextLength, metrics) is { } done)
                {
                    scheduler.Remove(r);
                    r.Finish(done);
                }
            }
            long inUse = pool.BytesInUse(scheduler.Running);
            Assert.True(inUse <= pool.BudgetBytes, $"step {steps}: {inUse} bytes in use > budget {pool.BudgetBytes}");
            Assert.InRange(pool.HeldBlocks, 0, pool.Blocks);
        }
        Assert.Empty(lostToBudget);
        for (int i = 0; i < requests.Length; i++)
        {
            var r = requests[i];
            Assert.Equal(RequestState.Finished, r.State);
            Assert.True(expected[i].SequenceEqual(r.Tokens.Skip(r.PromptLength)),
                $"request {r.Id} (preempted {r.Preemptions}x): expected [{string.Join(",", expected[i])}], got [{string.Join(",", r.Tokens.Skip(r.PromptLength))}]");
        }
        Assert.True(preemptions > 0, "the pool was meant to force preemptions");
        Assert.Equal(preemptions, scheduler.Preemptions);
        if (swap != null) Assert.True(resumedFromSwap > 0, "some requests were meant to come back from swap");
        if (swapHostBytes != null) Assert.True(scheduler.SwapRecomputes > 0, "the small host tier was meant to refuse some swaps");
        Assert.Equal(0, pool.HeldBlocks);
        // So the numbers show in the log when a case is tuned.
        Console.WriteLine($"{preemption} reserve {reserve} host {swapHostBytes}: {steps} steps, {preemptions} preemptions, " +
                          $"{scheduler.SwappedOut} swapped out, {resumedFromSwap} swapped in, {scheduler.SwapRecomputes} swap recomputes");
    }

    /// <summary>The requests (odd prompt lengths, output lengths and three priorities) and their lone greedy tokens,
    /// computed once for every case.</summary>
    private static readonly Lazy<(int[][] Prompts, int[] MaxTokens, int[] Priorities, int[][] Expected)> Requests = new(() =>
    {
        var prompts = Enumerable.Range(0, 14).Select(i => EngineFixtures.MobyPrompt(3000 + 613 * i, 40 + 53 * i % 170)).ToArray();
        int[] maxTokens = prompts.Select((_, i) => 16 + 11 * i % 37).ToArray();
        int[] priorities = prompts.Select((_, i) => i % 5 == 3 ? 2 : i % 3 == 1 ? 1 : 0).ToArray();
        var expected = prompts.Select((p, i) => EngineFixtures.SoloGreedy(EngineFixtures.Books, p, maxTokens[i])).ToArray();
        return (prompts, maxTokens, priorities, expected);
    });

    /// <summary>Higher priority first, then earlier arrival (the scheduler's rank).</summary>
    private static bool Outranks(EngineRequest a, EngineRequest b) =>
        a.Priority != b.Priority ? a.Priority > b.Priority : a.Arrival < b.Arrival;
}
