using Kvq.Sampling;

namespace Kvq.Tests.Sampling;

/// <summary>One step of the sampler chain: what it does to the candidates (token ids with their logits).</summary>
internal enum SamplingStep { Penalty, TopK, TopP, MinP, Temperature }

/// <summary>
/// llama.cpp's default sampler chain (penalties, top-k, top-p, min-p, temperature, dist) restated in double precision
/// over a list of candidates: the exact probability of every token of the vocabulary under <see cref="SamplerOptions"/>.
/// The steps can be run in another order, to show that an order test can tell them apart.
/// </summary>
internal static class ReferenceSampling
{
    public static readonly SamplingStep[] LlamaCppOrder =
        [SamplingStep.Penalty, SamplingStep.TopK, SamplingStep.TopP, SamplingStep.MinP, SamplingStep.Temperature];

    public static double[] Probabilities(float[] logits, int[] history, SamplerOptions o) =>
        Probabilities(logits, history, o, LlamaCppOrder);

    public static double[] Probabilities(float[] logits, int[] history, SamplerOptions o, SamplingStep[] order)
    {
        int vocab = logits.Length;
        var cand = Enumerable.Range(0, vocab).Select(i => (Id: i, Z: (double)logits[i])).ToList();
        var result = new double[vocab];
        if (o.Temperature <= 0)
        {
            cand = Penalize(cand, history, o);
            var best = cand.Aggregate((a, b) => b.Z > a.Z ? b : a); // the first of equal maxima
            result[best.Id] = 1;
            return result;
        }
        foreach (var step in order)
            cand = step switch
            {
                SamplingStep.Penalty => Penalize(cand, history, o),
                SamplingStep.TopK => o.TopK > 0 ? cand.OrderByDescending(c => c.Z).Take(o.TopK).ToList() : cand,
                SamplingStep.TopP => o.TopP < 1 ? TopP(cand, o.TopP) : cand,
                SamplingStep.MinP => o.MinP > 0 ? cand.Where(c => c.Z - cand.Max(m => m.Z) >= Math.Log(o.MinP)).ToList() : cand,
                SamplingStep.Temperature => cand.Select(c => (c.Id, c.Z / o.Temperature)).ToList(),
                _ => throw new ArgumentOutOfRangeException(nameof(order)),
            };
        var p = Softmax(cand.Select(c => c.Z).ToArray());
        for (int r = 0; r < cand.Count; r++) result[cand[r].Id] = p[r];
        return result;
    }

    /// <summary>Each distinct token among the last RepetitionWindow ones, once: positive logits divided by the
    /// penalty, others multiplied.</summary>
    private static List<(int Id, double Z)> Penalize(List<(int Id, double Z)> cand, int[] history, SamplerOptions o)
    {
        var seen = history.Skip(Math.Max(0, history.Length - o.RepetitionWindow)).ToHashSet();
        return cand.Select(c => seen.Contains(c.Id) ? (c.Id, c.Z > 0 ? c.Z / o.RepetitionPenalty : c.Z * o.RepetitionPenalty) : c).ToList();
    }

    /// <summary>The most likely candidates (probabilities at the current logits over the current candidates) until their
    /// mass reaches p, the one that reaches it included.</summary>
    private static List<(int Id, double Z)> TopP(List<(int Id, double Z)> cand, double p)
    {
        var sorted = cand.OrderByDescending(c => c.Z).ToList();
        var probs = Softmax(sorted.Select(c => c.Z).ToArray());
        double cum = 0;
        int keep = 0;
        while (keep < sorted.Count && cum < p) cum += probs[keep++];
        return sorted.Take(keep).ToList();
    }

    public static double[] Softmax(double[] x)
    {
        double max = x.Max();
        var e = x.Select(v => Math.Exp(v - max)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }

    /// <summary>Pearson's chi-square of observed counts against expected probabilities, over the tokens of positive
    /// probability; any draw of a token of probability 0 makes it infinite.</summary>
    public static (double ChiSquare, int DegreesOfFreedom) ChiSquare(int[] counts, double[] probabilities)
    {
        long total = counts.Sum(c => (long)c);
        double chi = 0;
        int bins = 0;
        for (int i = 0; i < counts.Length; i++)
        {
            if (probabilities[i] == 0)
            {
                if (counts[i] > 0) return (double.PositiveInfinity, 0);
                continue;
            }
            double expect = total * probabilities[i];
            chi += (counts[i] - expect) * (counts[i] - expect) / expect;
            bins++;
        }
        return (chi, Math.Max(1, bins - 1));
    }

    /// <summary>The chi-square value a correct sampler exceeds with probability about 1e-7 (Wilson-Hilferty, z = 5.2).</summary>
    public static double Critical(int degreesOfFreedom)
    {
        double k = degreesOfFreedom, a = 2 / (9 * k);
        return k * Math.Pow(1 - a + 5.2 * Math.Sqrt(a), 3);
    }
}
