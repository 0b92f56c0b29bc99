namespace Kvq.Serving;

/// <summary>One request's share of a step: run <see cref="Count"/> of its pending tokens.</summary>
/// <param name="Decode">Generated tokens (one when decoding; more when a preempted request recomputes), run through
/// the matrix-vector kernels; otherwise a prompt chunk.</param>
/// <param name="Blocks">Fresh blocks the append takes (reserved when planned).</param>
internal readonly record struct StepItem(EngineRequest Request, int Count, bool Decode, int Blocks)
{
    /// <summary>Whether this chunk reaches the request's last token, so its logits give the next token.</summary>
    public bool Logits => Request.Computed + Count == Request.Tokens.Count;
}
