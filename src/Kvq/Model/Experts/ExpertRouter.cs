namespace Kvq.Model.Experts;

/// <summary>
/// The router's choice for one token, as llama.cpp's build_moe_ffn makes it: softmax over the expert logits, the k
/// largest probabilities (ties to the lower index), optionally rescaled to sum to 1.
/// </summary>
public static class ExpertRouter
{
    /// <summary>Fills <paramref name="experts"/> and <paramref name="weights"/> (length k each) from the router
    /// <paramref name="logits"/>; <paramref name="probs"/> is scratch of the logits' length.</summary>
    public static void Route(ReadOnlySpan<float> logits, bool normalize, Span<int> experts, Span<float> weights, Span<float> probs)
    {
        int n = logits.Length, k = experts.Length;
        if (k < 1 || k > n || weights.Length != k || probs.Length < n)
            throw new ArgumentException($"routing {k} of {n} experts with {weights.Length} weights and {probs.Length} scratch");
        float max = float.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        float sum = 0;
        for (int i = 0; i < n; i++) sum += probs[i] = MathF.Exp(logits[i] - max);
        float inv = 1f / sum;
        for (int i = 0; i < n; i++) probs[i] *= inv;
        // Selection: k passes over a handful of experts (k <= 8, n <= 128 in published models).
        for (int j = 0; j < k; j++)
        {
            int best = -1;
            for (int i = 0; i < n; i++)
            {
                if (experts[..j].Contains(i)) continue;
                if (best < 0 || probs[i] > probs[best]) best = i;
            }
            experts[j] = best;
            weights[j] = probs[best];
        }
        if (normalize)
        {
            float s = 0;
            foreach (var w in weights) s += w;
            for (int j = 0; j < k; j++) weights[j] /= s;
        }
    }
}
