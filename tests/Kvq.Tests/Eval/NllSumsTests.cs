using Kvq.Eval;

namespace Kvq.Tests.Eval;

/// <summary>Perplexity's standard error as llama-perplexity computes it: sqrt((E[x^2] - E[x]^2) / (n - 1)) x PPL.</summary>
public sealed class NllSumsTests
{
    [Fact]
    public void StandardErrorMatchesTheHandComputedValue()
    {
        double[] nll = [1.0, 2.0, 3.0, 2.0];
        var s = new NllSums(nll.Sum(), nll.Sum(x => x * x), nll.Length);
        double mean = 2.0, variance = (1 + 4 + 9 + 4) / 4.0 - mean * mean; // 0.5
        Assert.Equal(Math.Exp(mean), s.Perplexity, 12);
        Assert.Equal(Math.Sqrt(variance / 3) * Math.Exp(mean), s.PerplexityError, 12);
    }

    [Fact]
    public void OneTokenOrEqualLossesHaveNoError()
    {
        Assert.Equal(0, new NllSums(2, 4, 1).PerplexityError);
        Assert.Equal(0, new NllSums(6, 12, 3).PerplexityError);
    }

    [Fact]
    public void SumsAdd() => Assert.Equal(new NllSums(3, 5, 2), new NllSums(1, 1, 1) + new NllSums(2, 4, 1));
}
