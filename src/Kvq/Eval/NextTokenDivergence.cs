namespace Kvq.Eval;

/// <summary>How far one next-token distribution is from a reference one, from raw logits, in double precision.</summary>
public static class NextTokenDivergence
{
    /// <summary>KL(reference || candidate) in nats: sum_i p_i (log p_i - log q_i), with p = softmax(reference) and
    /// q = softmax(candidate).</summary>
    public static double KlDivergence(ReadOnlySpan<float> reference, ReadOnlySpan<float> candidate)
    {
        if (reference.Length != candidate.Length)
            throw new ArgumentException($"logit rows differ in length: {reference.Length} vs {candidate.Length}");
        double lseP = PerplexityWindows.LogSumExp(reference), lseQ = PerplexityWindows.LogSumExp(candidate);
        double kl = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            double logP = reference[i] - lseP;
            double logQ = candidate[i] - lseQ;
            kl += Math.Exp(logP) * (logP - logQ);
        }
        // Rounding can leave a tiny negative sum for identical rows; KL itself is never negative.
        return Math.Max(0, kl);
    }

    /// <summary>Index of the largest logit (the first one on ties), i.e. the greedy token.</summary>
    public static int Argmax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++)
            if (row[i] > row[best]) best = i;
        return best;
    }
}
