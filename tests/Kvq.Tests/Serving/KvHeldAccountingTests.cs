using Kvq.Bench.Serving;
using Kvq.Cache;
using Kvq.Serving;
using Xunit.Abstractions;

namespace Kvq.Tests.Serving;

/// <summary>
/// What the engine reports as KV held, checked after every step against the running sequences' block tables read
/// directly: held = distinct blocks they reference x bytes per block (a block shared by a prefix hit once), unshared =
/// every table's blocks counted for it, context = their tokens; cached prefixes no one references are not held.
/// </summary>
public class KvHeldAccountingTests(ITestOutputHelper output)
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task HeldBytesAreTheDistinctBlocksOfTheRunningRequests()
    {
        // BOS + 100 shared tokens: 3 full blocks of 32 (96 tokens) can be shared; 5 tokens of the prefix fall in the
        // fourth block, which also takes each request's own tokens and so is each request's own.
        var shared = EngineFixtures.MobyPrompt(3000, 100);
        int[] Prompt(int offset) => [.. shared, .. EngineFixtures.MobyPrompt(offset, 40)[1..]];
        using var engine = EngineFixtures.Engine(EngineFixtures.Books, "f16", 8 * MiB, maxRunning: 4, stepTokens: 256);
        var pool = engine.Pool;
        var cache = pool.Cache;
        Assert.Equal(0, pool.BytesPerSequence); // f16: nothing outside blocks, so held bytes are block bytes only
        Assert.False(pool.HasPolicy);

        var checks = new List<string>();
        long maxSaved = 0, steps = 0;
        int maxRunningSeen = 0;
        engine.StepCompleted += s =>
        {
            // On the engine thread, between steps: the block tables are stable.
            var distinct = new HashSet<int>();
            long references = 0, tokens = 0;
            int live = 0;
            foreach (int id in cache.Sequences.LiveIds)
            {
                var ids = cache.Sequences.BlockIds(id);
                foreach (int b in ids) distinct.Add(b);
                references += ids.Length;
                tokens += cache.Sequences.TokenCount(id);
                live++;
            }
            long cachedBlocks = 0;
            for (int b = 0; b < cache.Sequences.Pool.BlockCount; b++)
                if (!distinct.Contains(b) && cache.Sequences.Pool.Prefixes.IsRegistered(b)) cachedBlocks++;
            steps++;
            maxRunningSeen = Math.Max(maxRunningSeen, s.Running);
            maxSaved = Math.Max(maxSaved, references - distinct.Count);
            if (live != s.Running) checks.Add($"step {s.Step}: {live} live sequences, {s.Running} running");
            if (s.KvHeldBytes != distinct.Count * pool.BytesPerBlock)
                checks.Add($"step {s.Step}: held {s.KvHeldBytes} != {distinct.Count} distinct blocks x {pool.BytesPerBlock}");
            if (s.BlocksUsed != distinct.Count) checks.Add($"step {s.Step}: blocks used {s.BlocksUsed} != {distinct.Count} distinct");
            if (s.KvUnsharedBytes != references * pool.BytesPerBlock)
                checks.Add($"step {s.Step}: unshared {s.KvUnsharedBytes} != {references} references x {pool.BytesPerBlock}");
            if (s.KvContextTokens != tokens) checks.Add($"step {s.Step}: context {s.KvContextTokens} != {tokens} tokens");
            if (s.KvCachedBytes != cachedBlocks * pool.BytesPerBlock)
                checks.Add($"step {s.Step}: cached {s.KvCachedBytes} != {cachedBlocks} unreferenced registered blocks x {pool.BytesPerBlock}");
        };

        // The first request fills the prefix cache; when it is done, its 3 full blocks are cached, none is held.
        var first = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(Prompt(9000), 6)));
        Assert.Equal(0, first.CachedPromptTokens);
        var after = engine.Snapshot();
        Assert.Equal(0, after.KvHeldBytes);
        Assert.Equal(0, after.KvContextTokens);
        // 141 prompt tokens + 5 generated ones appended = 146: 4 full blocks, the partial fifth is not registered.
        Assert.Equal(4 * pool.BytesPerBlock, after.KvCachedBytes);

        // Three more at once: each finds the 3 shared blocks and holds them with the others.
        var rest = await Task.WhenAll(new[] { 12000, 15000, 18000 }.Select(o => EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(Prompt(o), 6)))));
        output.WriteLine($"{steps} steps, up to {maxRunningSeen} running, at most {maxSaved} block references saved by sharing");
        Assert.All(rest, r => Assert.Equal(96, r.CachedPromptTokens));
        Assert.Empty(checks);
        Assert.Equal(3, maxRunningSeen);
        // Three tables naming the same 3 blocks: 9 references, 3 blocks held, 6 saved. Not more (the fourth block,
        // with 5 prefix tokens, is each request's own), not less.
        Assert.Equal(6, maxSaved);
    }

    /// <summary>`kvq bench serve`'s per-token figures on a small shared-prefix workload: without the prefix cache the
    /// held bytes are exactly the unshared ones and each token of context costs at least the format's bytes per token;
    /// with it, the prefix is held once, so both fall.</summary>
    [Fact]
    public async Task ServeBenchPerTokenFiguresFollowTheSharing()
    {
        var m = EngineFixtures.Books;
        var text = m.Tokenizer.Encode(TextFixtures.Read(Fixtures.MobyDick), addBos: false);
        // Three clients, two requests each: the second request of each finds the 5 full blocks of the shared 161
        // tokens (BOS + 160); living 32 steps or more each, they run together.
        var workload = new ServeWorkload { Requests = 6, PromptTokens = 200, SharedPrefix = 0.8, OutputTokens = 32, Concurrency = 3 };
        var requests = workload.Build(text, m.Tokenizer.BosId);
        var shape = EngineFixtures.Model(m).KvShape;
        long bytesPerToken = (long)shape.Layers * shape.KvDim * 2 * 2; // f16 keys and values
        ServeBenchResult Run(bool prefix) => ServeBenchmark.Run(EngineFixtures.Model(m, 256), m.Tokenizer, "books-19m",
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 16 * MiB, MaxRunning = 8, PrefixCache = prefix },
            workload, requests).GetAwaiter().GetResult();
        var off = Run(false);
        var on = Run(true);
        output.WriteLine($"off: {off.KvHeldPerTokenBytes:F0} B/token, held/unshared {off.KvHeldVsUnshared:F3}, cached {off.PeakKvCachedBytes}; " +
                         $"on: {on.KvHeldPerTokenBytes:F0} B/token, held/unshared {on.KvHeldVsUnshared:F3}, cached {on.PeakKvCachedBytes}");
        Assert.Equal(6, off.Completed);
        Assert.Equal(6, on.Completed);
        Assert.Equal(1.0, off.KvHeldVsUnshared, 12);
        Assert.Equal(0, off.PeakKvCachedBytes);
        // Partial last blocks only ever add to a token's cost.
        Assert.InRange(off.KvHeldPerTokenBytes, bytesPerToken, bytesPerToken * 2);
        // At least the second request of each client hits; the very first never can.
        Assert.InRange(on.PrefixHitRate, 3 * 160 / 1200.0 - 1e-9, 5 * 160 / 1200.0 + 1e-9);
        Assert.InRange(on.KvHeldVsUnshared, 0.1, 0.99);
        Assert.True(on.KvHeldPerTokenBytes < off.KvHeldPerTokenBytes, $"{on.KvHeldPerTokenBytes} vs {off.KvHeldPerTokenBytes}");
        Assert.True(on.PeakKvCachedBytes > 0);
    }
}
