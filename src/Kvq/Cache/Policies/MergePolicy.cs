namespace Kvq.Cache.Policies;

/// <summary>
/// Merging instead of dropping, in the manner of CaM (Zhang et al., "CaM: Cache Merging for Memory-efficient LLMs
/// Inference", ICML 2024) and D2O (Wan et al., "D2O: Dynamic Discriminative Operations for Efficient Generative
/// Inference of Large Language Models", arXiv:2406.13035): the wrapped policy chooses which slots stay; each evicted
/// token is then folded into the kept token whose key is most similar (cosine), as a weighted average of keys and of
/// values. A slot standing for w tokens carries ln w, which attention adds to its score: w identical tokens then get
/// exactly the attention they would have had apart. Sinks are never merged into or from. Keys are averaged as stored
/// (post-RoPE, or pre-RoPE for pre-RoPE codecs, which rotate the average at the kept token's position).
/// Spec: merge[:threshold=-1,]INNER (default inner: h2o); an evicted token less similar than threshold is dropped.
/// </summary>
public sealed class MergePolicy(KvPolicy inner, double threshold) : KvPolicy("merge")
{
    public KvPolicy Inner => inner;
    public override int ObservedQueries => inner.ObservedQueries;
    public override bool AccumulatesAttention => inner.AccumulatesAttention;
    public override int SinkTokens => inner.SinkTokens;
    public override bool Merges => true;
    public override int LayerBudget(int layer, int layers, int average) => inner.LayerBudget(layer, layers, average);
    public override void Score(IPolicyView view, int layer, int head, Span<float> scores) => inner.Score(view, layer, head, scores);
    public override void Select(IPolicyView view, int layer, int head, int keep, Span<bool> kept) => inner.Select(view, layer, head, keep, kept);

    public override void BeforeEviction(IPolicyEditor editor, int layer, int head, ReadOnlySpan<bool> kept)
    {
        int n = editor.Count(layer), hd = editor.HeadDim, sinks = editor.Sinks(layer, head);
        // Working copies (the sequence's reusable buffers): merges into one slot add up before it is re-encoded once.
        var keys = editor.Work(0, n * hd)[..(n * hd)];
        var values = editor.Work(1, n * hd)[..(n * hd)];
        var logw = editor.Work(2, n)[..n];
        var att = editor.Work(3, 2 * n)[..n];
        var norms = editor.Work(3, 2 * n).Slice(n, n); // second half: changed slots are marked by a negative norm
        editor.Keys(layer, head).CopyTo(keys);
        editor.Values(layer, head).CopyTo(values);
        editor.LogWeights(layer, head).CopyTo(logw);
        editor.Attention(layer, head).CopyTo(att);
        for (int s = 0; s < n; s++) norms[s] = Math.Max(1e-20f, System.Numerics.Tensors.TensorPrimitives.Norm(keys.Slice(s * hd, hd)));
        for (int e = sinks; e < n; e++)
        {
            if (kept[e]) continue;
            var ke = keys.Slice(e * hd, hd);
            int best = -1;
            float bestSim = float.NegativeInfinity;
            for (int k = sinks; k < n; k++)
            {
                if (!kept[k]) continue;
                float sim = System.Numerics.Tensors.TensorPrimitives.Dot(ke, keys.Slice(k * hd, hd)) / (norms[e] * Math.Abs(norms[k]));
                if (sim > bestSim) { bestSim = sim; best = k; }
            }
            if (best < 0 || bestSim < threshold) continue;
            // Weights w = exp(log-weight); the merged slot stands for w_k + w_e tokens.
            double wk = Math.Exp(logw[best]), we = Math.Exp(logw[e]), total = wk + we;
            float a = (float)(wk / total), b = (float)(we / total);
            Blend(keys.Slice(best * hd, hd), ke, a, b);
            Blend(values.Slice(best * hd, hd), values.Slice(e * hd, hd), a, b);
            logw[best] = (float)Math.Log(total);
            att[best] += att[e];
            norms[best] = -Math.Max(1e-20f, System.Numerics.Tensors.TensorPrimitives.Norm(keys.Slice(best * hd, hd)));
        }
        for (int s = 0; s < n; s++)
            if (norms[s] < 0) editor.Rewrite(layer, head, s, keys.Slice(s * hd, hd), values.Slice(s * hd, hd), logw[s], att[s]);
    }

    private static void Blend(Span<float> dst, ReadOnlySpan<float> other, float a, float b)
    {
        for (int i = 0; i < dst.Length; i++) dst[i] = a * dst[i] + b * other[i];
    }
}
