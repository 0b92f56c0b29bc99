using Kvq.Tokenizers;

namespace Kvq.Serving;

/// <summary>Log-probabilities of tokens under the model's raw distribution (softmax of the logits, before sampling
/// settings), as OpenAI's API reports them.</summary>
internal static class Logprobs
{
    public static (float Logprob, IReadOnlyList<TokenLogprob>? Top) Of(ReadOnlySpan<float> logits, int token, int top, ITokenizer tokenizer)
    {
        float max = float.NegativeInfinity;
        foreach (var x in logits) max = Math.Max(max, x);
        double sum = 0;
        foreach (var x in logits) sum += Math.Exp(x - max);
        double logZ = max + Math.Log(sum);
        if (top <= 0) return ((float)(logits[token] - logZ), null);
        // Partial selection of the top entries: k is at most 20, the vocabulary tens of thousands.
        var best = new List<int>(top + 1);
        for (int id = 0; id < logits.Length; id++)
        {
            if (best.Count == top && logits[id] <= logits[best[^1]]) continue;
            int at = best.Count;
            while (at > 0 && logits[best[at - 1]] < logits[id]) at--;
            best.Insert(at, id);
            if (best.Count > top) best.RemoveAt(top);
        }
        var list = new TokenLogprob[best.Count];
        for (int i = 0; i < best.Count; i++)
            list[i] = new TokenLogprob(best[i], TokenDecoder.Decode(tokenizer, [best[i]]), (float)(logits[best[i]] - logZ));
        return ((float)(logits[token] - logZ), list);
    }
}
