namespace Kvq.Cache.Policies;

/// <summary>
/// StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", arXiv:2309.17453): keep the
/// first <c>sink</c> tokens (attention sinks) and the most recent ones; everything in between goes.
/// Args: sink=4.
/// </summary>
public sealed class StreamingLlmPolicy(int sinks) : KvPolicy("streaming")
{
    public override int SinkTokens => sinks;

    /// <summary>The position: the selector keeps the sinks, then the most recent tokens.</summary>
    public override void Score(IPolicyView view, int layer, int head, Span<float> scores)
    {
        var pos = view.Positions(layer, head);
        for (int s = 0; s < pos.Length; s++) scores[s] = pos[s];
    }

    public static StreamingLlmPolicy Create(PolicyArgs a)
    {
        var p = new StreamingLlmPolicy(a.Int("sink", 4, 0));
        a.CheckAllUsed("sink");
        return p;
    }
}
