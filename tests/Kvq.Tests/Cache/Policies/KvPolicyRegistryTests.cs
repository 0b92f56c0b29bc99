using Kvq.Cache;
using Kvq.Cache.Policies;

namespace Kvq.Tests.Cache.Policies;

/// <summary>Spec parsing: names, arguments, wrappers' inner specs, budgets; every mistake a typed one-line error.</summary>
public class KvPolicyRegistryTests
{
    [Theory]
    [InlineData("streaming", typeof(StreamingLlmPolicy))]
    [InlineData("streaming:sink=8", typeof(StreamingLlmPolicy))]
    [InlineData("h2o:recent=0.25,sink=2", typeof(H2oPolicy))]
    [InlineData("snapkv:window=16,pool=5", typeof(SnapKvPolicy))]
    [InlineData("tova", typeof(TovaPolicy))]
    [InlineData("knorm", typeof(KnormPolicy))]
    [InlineData("pyramid", typeof(PyramidPolicy))]
    [InlineData("pyramid:beta=10,h2o:recent=4", typeof(PyramidPolicy))]
    [InlineData("merge:h2o:recent=0.25,sink=4", typeof(MergePolicy))]
    [InlineData("merge:threshold=0.5,snapkv", typeof(MergePolicy))]
    [InlineData("compose:share=0.25,knorm+h2o:recent=0.25", typeof(ComposedPolicy))]
    [InlineData("merge:pyramid:compose:knorm+snapkv", typeof(MergePolicy))]
    public void ParsesEverySpecForm(string spec, Type type)
    {
        var p = KvPolicyRegistry.Parse(spec);
        Assert.IsType(type, p);
        Assert.Equal(spec, p.Name);
    }

    [Fact]
    public void WrappersPassArgumentsToTheRightPolicy()
    {
        var merge = Assert.IsType<MergePolicy>(KvPolicyRegistry.Parse("merge:streaming:sink=7"));
        Assert.Equal(7, merge.SinkTokens);
        Assert.True(merge.Merges);
        var pyramid = Assert.IsType<PyramidPolicy>(KvPolicyRegistry.Parse("pyramid:beta=4,h2o"));
        Assert.IsType<H2oPolicy>(pyramid.Inner);
        Assert.Equal(int.MaxValue, pyramid.ObservedQueries);
        // beta 4 over 8 layers at 100 on average: 175 at the bottom down to 25 at the top, 800 in all.
        Assert.Equal(175, pyramid.LayerBudget(0, 8, 100));
        Assert.Equal(25, pyramid.LayerBudget(7, 8, 100));
        Assert.Equal(800, Enumerable.Range(0, 8).Sum(l => pyramid.LayerBudget(l, 8, 100)));
    }

    [Theory]
    [InlineData("lru", "unknown policy 'lru'")]
    [InlineData("h2o:recnt=0.5", "unknown argument 'recnt'")]
    [InlineData("h2o:recent", "not key=value")]
    [InlineData("snapkv:pool=4", "must be odd")]
    [InlineData("streaming:sink=-1", "sink=-1")]
    [InlineData("compose:h2o", "two policies")]
    [InlineData("compose:h2o+snapkv", "read attention differently")]
    [InlineData("pyramid:beta=0,h2o", "beta=0")]
    [InlineData("merge:h2o:sink=1,sink=2", "given twice")]
    public void MistakesAreTypedErrors(string spec, string message)
    {
        var e = Assert.Throws<KvSpecException>(() => KvPolicyRegistry.Parse(spec));
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [InlineData("0.25", 0.25, 256, 64)]
    [InlineData("25%", 0.25, 257, 65)]
    [InlineData("512", 512, 4000, 512)]
    [InlineData("1", 1, 10, 1)]
    public void BudgetsAreFractionsOrTokens(string text, double value, int length, int tokens)
    {
        var b = KvBudget.Parse(text);
        Assert.Equal(value, b.Value, 9);
        Assert.Equal(tokens, b.Tokens(length));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-3")]
    [InlineData("1.5")]
    [InlineData("half")]
    public void BadBudgetsAreTypedErrors(string text) => Assert.Throws<KvSpecException>(() => KvBudget.Parse(text));

    [Fact]
    public void NoneMeansNoPolicy()
    {
        Assert.Null(KvPolicyRegistry.TryParse("none"));
        Assert.Null(KvPolicyRegistry.TryParse(""));
    }
}
