using Kvq.Cache.Policies;

namespace Kvq.Tests.Cache.Policies;

/// <summary>Top-k selection against a sort: random scores with many ties, sinks always kept, ties to the recent slots.</summary>
public class SlotSelectorTests
{
    [Fact]
    public void MatchesStableSortReference()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 300; trial++)
        {
            int n = rng.Next(1, 90), sinks = rng.Next(0, 5), keep = rng.Next(0, n + 3);
            var scores = new float[n];
            for (int i = 0; i < n; i++)
                scores[i] = rng.Next(6) switch { 0 => float.PositiveInfinity, 1 => float.NaN, _ => rng.Next(8) }; // many ties
            var kept = new bool[n];
            SlotSelector.TopK(scores.ToArray(), sinks, keep, kept);
            // Reference: sinks, then the others by (score desc, slot desc), NaN as -inf.
            int s = Math.Min(sinks, n), k = Math.Clamp(keep, s, n);
            var expect = new bool[n];
            for (int i = 0; i < s; i++) expect[i] = true;
            var order = Enumerable.Range(s, n - s)
                .OrderByDescending(i => float.IsNaN(scores[i]) ? float.NegativeInfinity : scores[i]).ThenByDescending(i => i).Take(k - s);
            foreach (var i in order) expect[i] = true;
            Assert.Equal(expect, kept);
        }
    }

    [Fact]
    public void FlagsMustCoverEverySlot()
    {
        float[] scores = [0.7f, -1.3f, 2.1f, 0.4f, 1.9f];
        var e = Assert.Throws<ArgumentException>(() => SlotSelector.TopK(scores.ToArray(), 0, 2, new bool[4]));
        Assert.Equal("4 flags for 5 slots", e.Message);
        var kept = new bool[7]; // more flags than slots: those past the slots are left alone
        SlotSelector.TopK(scores.ToArray(), 1, 3, kept);
        Assert.Equal([true, false, true, false, true, false, false], kept);
    }
}
