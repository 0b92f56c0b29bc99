using Kvq.Cache;
using Kvq.Cache.Policies;

namespace Kvq.Tests.Cache.Policies;

/// <summary>
/// The exact words of spec errors (each names the policy, the argument and what it accepts), the edges of argument
/// ranges, policies' own names, the registry's list and budgets as reports print them. (Survivors of the Stryker run
/// in docs/testing.md.)
/// </summary>
public class PolicySpecMessagesTests
{
    [Theory]
    [InlineData("streaming:bogus=1", "policy 'streaming': unknown argument 'bogus' (known: sink)")]
    [InlineData("h2o:bogus=1", "policy 'h2o': unknown argument 'bogus' (known: recent, sink)")]
    [InlineData("snapkv:bogus=1", "policy 'snapkv': unknown argument 'bogus' (known: window, pool, sink)")]
    [InlineData("tova:bogus=1", "policy 'tova': unknown argument 'bogus' (known: sink)")]
    [InlineData("knorm:bogus=1", "policy 'knorm': unknown argument 'bogus' (known: sink)")]
    [InlineData("pyramid:bogus=1,h2o", "policy 'pyramid': unknown argument 'bogus' (known: beta)")]
    [InlineData("merge:bogus=1,h2o", "policy 'merge': unknown argument 'bogus' (known: threshold)")]
    [InlineData("compose:bogus=1,knorm+h2o", "policy 'compose': unknown argument 'bogus' (known: share)")]
    [InlineData("h2o:sink=-1", "policy 'h2o': sink=-1 must be a whole number in 0..")]
    [InlineData("snapkv:window=0", "policy 'snapkv': window=0 must be a whole number in 1..")]
    [InlineData("merge:threshold=1.5,h2o", "policy 'merge': threshold=1.5 must be a number in [-1, 1]")]
    [InlineData("h2o:=5", "policy 'h2o': argument '=5' is not key=value")]
    [InlineData("h2o:recent=", "policy 'h2o': argument 'recent=' is not key=value")]
    [InlineData("compose:share=0.5", "policy 'compose': give the policies to run, e.g. compose:knorm+h2o")]
    [InlineData("compose:h2o+snapkv", "policy 'compose': h2o and snapkv read attention differently (accumulated over every query vs the last chunk's); compose one of them with a policy that reads no attention")]
    [InlineData("lru", "unknown policy 'lru' (known: none, streaming, h2o, snapkv, tova, knorm, pyramid, merge, compose)")]
    public void ErrorsSayExactlyWhatIsWrong(string spec, string message) =>
        Assert.Equal(message, Assert.Throws<KvSpecException>(() => KvPolicyRegistry.Parse(spec)).Message);

    [Theory]
    [InlineData("streaming:sink=2147483647")]   // the top of an open range
    [InlineData("merge:threshold=-1,h2o")]       // the bottom of a closed one
    [InlineData("compose:share=0,knorm+h2o")]
    [InlineData("compose:h2o+knorm")]            // one side reads no attention: any pair goes
    [InlineData("pyramid:beta=3")]               // a wrapper's own arguments only: the default inner policy
    public void EdgesOfTheRangesAreAccepted(string spec) => Assert.Equal(spec, KvPolicyRegistry.Parse(spec).Name);

    [Fact]
    public void AWrapperWithOnlyItsOwnArgumentsWrapsItsDefault()
    {
        Assert.IsType<SnapKvPolicy>(Assert.IsType<PyramidPolicy>(KvPolicyRegistry.Parse("pyramid:beta=3")).Inner);
        Assert.IsType<H2oPolicy>(Assert.IsType<MergePolicy>(KvPolicyRegistry.Parse("merge:threshold=0.5")).Inner);
    }

    [Fact]
    public void BlankSpecsMeanNoPolicy()
    {
        Assert.Null(KvPolicyRegistry.TryParse(" \t "));
        Assert.IsType<H2oPolicy>(KvPolicyRegistry.TryParse(" h2o "));
    }

    [Fact]
    public void PoliciesMadeDirectlyCarryTheirNames()
    {
        var h2o = new H2oPolicy(0.5, 0);
        KvPolicy[] made =
        [
            new StreamingLlmPolicy(4), h2o, new SnapKvPolicy(32, 7, 0), new TovaPolicy(0), new KnormPolicy(0),
            new PyramidPolicy(h2o, 20), new MergePolicy(h2o, -1), new ComposedPolicy(new KnormPolicy(0), h2o, 0.5),
        ];
        Assert.Equal(["streaming", "h2o", "snapkv", "tova", "knorm", "pyramid", "merge", "compose"], made.Select(p => p.Name));
        Assert.Equal(made.Select(p => p.Name), KvPolicyRegistry.Policies.Select(p => p.Name));
    }

    [Fact]
    public void EveryListedPolicyIsDescribed()
    {
        var titles = new Dictionary<string, string>
        {
            ["streaming"] = "StreamingLLM", ["h2o"] = "H2O", ["snapkv"] = "SnapKV", ["tova"] = "TOVA", ["knorm"] = "Key norm",
            ["pyramid"] = "PyramidKV", ["merge"] = "merge evicted tokens", ["compose"] = "two policies sharing the budget",
        };
        foreach (var (name, description) in KvPolicyRegistry.Policies) Assert.StartsWith(titles[name], description);
    }

    [Theory]
    [InlineData("0.25", "head", "h2o@25%")]
    [InlineData("12.5%", "head", "h2o@12.5%")]
    [InlineData("0.33333", "head", "h2o@33.33%")]
    [InlineData("512", "layer", "h2o@512/layer")]
    [InlineData("0.3", "layer", "h2o@30%/layer")]
    public void BudgetsPrintAsTheyAreGiven(string budget, string scope, string name) =>
        Assert.Equal(name, new KvPolicyConfig(KvPolicyRegistry.Parse("h2o"), KvBudget.Parse(budget, scope)).Name);

    [Theory]
    [InlineData("0.5", "row", "budget scope 'row': expected head or layer")]
    [InlineData("1.5", "head", "budget '1.5': give a fraction of the tokens below 1 (0.25 or 25%) or a whole number of tokens (512)")]
    public void BudgetErrorsSayWhatIsAccepted(string budget, string scope, string message) =>
        Assert.Equal(message, Assert.Throws<KvSpecException>(() => KvBudget.Parse(budget, scope)).Message);
}
