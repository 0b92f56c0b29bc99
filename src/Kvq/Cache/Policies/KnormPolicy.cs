namespace Kvq.Cache.Policies;

/// <summary>
/// Key norm (Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression",
/// arXiv:2406.11430): keys with a low L2 norm draw high attention, so the tokens with the lowest key norms stay. Needs
/// no attention at all (a cheap baseline; the norm is the same before and after RoPE).
/// Args: sink=0.
/// </summary>
public sealed class KnormPolicy(int sinks) : KvPolicy("knorm")
{
    public override int SinkTokens => sinks;

    public override void Score(IPolicyView view, int layer, int head, Span<float> scores)
    {
        var keys = view.Keys(layer, head);
        int hd = view.HeadDim;
        for (int s = 0; s < scores.Length; s++)
            scores[s] = -System.Numerics.Tensors.TensorPrimitives.Norm(keys.Slice(s * hd, hd));
    }

    public static KnormPolicy Create(PolicyArgs a)
    {
        var p = new KnormPolicy(a.Int("sink", 0, 0));
        a.CheckAllUsed("sink");
        return p;
    }
}
