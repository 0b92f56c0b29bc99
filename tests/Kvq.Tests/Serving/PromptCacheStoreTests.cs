using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Model;
using Kvq.Serving;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Serving;

/// <summary>The engine's prefix cache kept across restarts (<see cref="PromptCacheStore"/>): what one engine cached is
/// cached in the next one, the answers do not change, broken files are skipped with their reason and cleaned up, and
/// a restore never evicts.</summary>
public sealed class PromptCacheStoreTests : IDisposable
{
    private const long MiB = 1 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-prompt-cache-test-").FullName;
    private static readonly Lazy<Kvq.Cache.Codecs.IKvProfile> Profile =
        new(() => KvQuantTestData.Profile(EngineFixtures.Model(EngineFixtures.Books).KvShape, tokens: 600));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static KvCacheConfig Config(string spec, int sink) =>
        KvCacheConfig.Parse(spec) with { SinkTokens = sink, Profile = spec.StartsWith("nuq", StringComparison.Ordinal) ? Profile.Value : null };

    private PromptCacheStore Store(int maxPrefixes = 64) =>
        new(_dir, ModelIdentity.Of(EngineFixtures.Books).Session, maxPrefixes);

    private static InferenceEngine Engine(KvCacheConfig config, PromptCacheStore store, long budget = 16 * MiB) =>
        new(EngineFixtures.Model(EngineFixtures.Books), EngineFixtures.Books.Tokenizer, new EngineOptions
        {
            Kv = config, KvBudgetBytes = budget, PromptCache = store,
        });

    /// <summary>Two prompts (201 and 151 tokens sharing nothing) run in one engine, then again in it; a second engine
    /// over the same folder finds as many of their tokens cached as the repeats in the first engine did (192 and 128
    /// with block formats; KIVI keeps its recent 128 tokens in staging, so fewer), gives the same greedy tokens as the
    /// first engine, and a third prompt that shares only the first 100 tokens of one finds up to 96 of them.</summary>
    [Theory]
    [InlineData("f16", 0)]
    [InlineData("q4_0", 0)]
    [InlineData("kivi2", 0)]
    [InlineData("nuq3-1%", 1)]
    public async Task WhatOneEngineCachedTheNextFinds(string spec, int sink)
    {
        var config = Config(spec, sink);
        var a = EngineFixtures.MobyPrompt(7000, 200);
        var b = EngineFixtures.MobyPrompt(12000, 150);
        var store = Store();
        CompletionResult firstA, firstB, repeatA, repeatB;
        using (var engine = Engine(config, store))
        {
            Assert.Equal(0, store.LastLoad!.Files);
            firstA = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(a, 12)));
            firstB = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(b, 12)));
            repeatA = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(a, 12)));
            repeatB = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(b, 12)));
        }
        Assert.Null(store.SaveError);
        Assert.Equal(2, store.LastSave!.Prefixes);
        Assert.Equal(2, Directory.GetFiles(store.LastSave.Folder, "*.kvqs").Length);
        if (spec != "kivi2")
        {
            Assert.Equal((192, 128), (repeatA.CachedPromptTokens, repeatB.CachedPromptTokens));
            Assert.Equal(192 + 160, store.LastSave.Tokens);   // what each sequence held (prompt + 11 generated), in blocks of 32
        }
        Assert.True(repeatA.CachedPromptTokens > 0 && repeatB.CachedPromptTokens > 0, "the repeats found nothing cached");

        var again = Store();
        using (var engine = Engine(config, again))
        {
            Assert.Equal((2, 2, store.LastSave.Tokens), (again.LastLoad!.Files, again.LastLoad.Prefixes, again.LastLoad.Tokens));
            Assert.Empty(again.LastLoad.Skipped);
            var secondA = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(a, 12)));
            var secondB = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(b, 12)));
            Assert.Equal(repeatA.CachedPromptTokens, secondA.CachedPromptTokens);
            Assert.Equal(repeatB.CachedPromptTokens, secondB.CachedPromptTokens);
            Assert.Equal(firstA.Tokens, secondA.Tokens);
            Assert.Equal(firstB.Tokens, secondB.Tokens);
            int[] partial = [.. a.AsSpan(0, 100), .. EngineFixtures.MobyPrompt(30000, 40).AsSpan(1)];
            var third = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(partial, 4)));
            Assert.Equal(Math.Min(96, secondA.CachedPromptTokens), third.CachedPromptTokens);
        }
    }

    /// <summary>A bit-flipped file and a truncated one are skipped with their path and reason while the good one is
    /// restored; the next save removes the broken ones.</summary>
    [Fact]
    public async Task BrokenFilesAreSkippedWithTheirReasonAndRemovedAtTheNextSave()
    {
        var config = Config("f16", 0);
        var prompts = new[] { EngineFixtures.MobyPrompt(7000, 100), EngineFixtures.MobyPrompt(9000, 100), EngineFixtures.MobyPrompt(11000, 100) };
        var store = Store();
        using (var engine = Engine(config, store))
            foreach (var p in prompts) await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, 4)));
        var files = Directory.GetFiles(store.LastSave!.Folder, "*.kvqs").Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(3, files.Length);
        var flipped = File.ReadAllBytes(files[0]);
        flipped[flipped.Length / 2] ^= 0x10;
        File.WriteAllBytes(files[0], flipped);
        var cut = File.ReadAllBytes(files[1]);
        File.WriteAllBytes(files[1], cut.AsSpan(0, cut.Length - 100).ToArray());

        var again = Store();
        using (var engine = Engine(config, again))
        {
            Assert.Equal((3, 1), (again.LastLoad!.Files, again.LastLoad.Prefixes));
            Assert.Equal(2, again.LastLoad.Skipped.Count);
            Assert.Contains(again.LastLoad.Skipped, s => s.Contains(files[0], StringComparison.Ordinal) && s.Contains("SHA-256", StringComparison.Ordinal));
            Assert.Contains(again.LastLoad.Skipped, s => s.Contains(files[1], StringComparison.Ordinal) && s.Contains("header says", StringComparison.Ordinal));
        }
        var left = Directory.GetFiles(again.LastSave!.Folder, "*.kvqs");
        Assert.Equal([files[2]], left);
    }

    /// <summary>Another format keeps its own folder: nothing of the f16 engine's is offered to a q8_0 engine, and its
    /// save leaves the f16 files alone.</summary>
    [Fact]
    public async Task EachFormatHasItsOwnFolder()
    {
        var prompt = EngineFixtures.MobyPrompt(7000, 100);
        var store = Store();
        using (var engine = Engine(Config("f16", 0), store))
            await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 4)));
        var other = Store();
        using (var engine = Engine(Config("q8_0", 0), other))
        {
            Assert.Equal(0, other.LastLoad!.Files);
            Assert.NotEqual(store.LastSave!.Folder, other.LastLoad.Folder);
            var r = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 4)));
            Assert.Equal(0, r.CachedPromptTokens);
        }
        Assert.Single(Directory.GetFiles(store.LastSave.Folder, "*.kvqs"));
        Assert.Single(Directory.GetFiles(other.LastSave!.Folder, "*.kvqs"));
    }

    /// <summary>An engine whose pool is smaller than a saved prefix skips it (named, with the blocks it needs) rather
    /// than evicting what it restored already; it still serves requests.</summary>
    [Fact]
    public async Task ARestoreNeverEvictsAndSkipsWhatDoesNotFit()
    {
        var config = Config("f16", 0);
        var store = Store();
        var longPrompt = EngineFixtures.MobyPrompt(7000, 300);
        var shortPrompt = EngineFixtures.MobyPrompt(20000, 70);
        using (var engine = Engine(config, store))
        {
            await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(longPrompt, 4)));
            await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(shortPrompt, 4)));
        }
        var plan = KvLayoutPlan.Build(EngineFixtures.Model(EngineFixtures.Books).KvShape, config);
        long budget = 6 * plan.BytesPerBlock + 1;   // the short prefix (2 blocks) fits, the long one (9 blocks) does not
        var small = Store();
        using var tiny = Engine(config, small, budget);
        Assert.Equal(1, small.LastLoad!.Prefixes);
        Assert.Contains(small.LastLoad.Skipped, s => s.Contains("need 9 blocks", StringComparison.Ordinal));
        var r = await EngineFixtures.Collect(tiny.Submit(EngineFixtures.Greedy(shortPrompt, 4)));
        Assert.Equal(64, r.CachedPromptTokens);
    }

    [Fact]
    public void RecentRunsKeepTheLongestAndTheNewest()
    {
        var recent = new RecentPrefixes(capacity: 2, blockTokens: 4);
        recent.Add([1, 2, 3]);                       // shorter than a block: nothing
        Assert.Equal(0, recent.Count);
        recent.Add([1, 2, 3, 4, 5, 6]);              // one block
        recent.Add([1, 2, 3, 4, 5, 6, 7, 8, 9]);     // extends it: replaces it
        Assert.Equal([[1, 2, 3, 4, 5, 6, 7, 8]], recent.Runs);
        recent.Add([9, 9, 9, 9]);
        recent.Add([1, 2, 3, 4]);                    // covered by the first: refreshes it
        Assert.Equal([[1, 2, 3, 4, 5, 6, 7, 8], [9, 9, 9, 9]], recent.Runs);
        recent.Add([7, 7, 7, 7]);                    // over capacity: the oldest goes
        Assert.Equal([[7, 7, 7, 7], [1, 2, 3, 4, 5, 6, 7, 8]], recent.Runs);
    }
}
