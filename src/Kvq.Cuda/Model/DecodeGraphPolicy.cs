namespace Kvq.Cuda.Model;

/// <summary>What <see cref="DecodeGraph"/> does with the next decode step.</summary>
internal enum DecodeGraphAction
{
    /// <summary>Replay the graph captured for this step's shape.</summary>
    Replay,
    /// <summary>Run the step directly (the reference kernels), then capture one of this shape for the next steps.</summary>
    RunThenCapture,
}

/// <summary>
/// When a captured decode step can be replayed: the graph bakes in the sequence's buffers and the attention split (the
/// split kernels' grid), so it serves the same sequence while the split stays the same; position, slot and count come
/// from the device (<see cref="DecodeStep"/>). Any other step runs directly and is captured afterwards: every kernel and
/// cuBLAS product of the graph has then run once outside the capture (loaded, no lazy set-up inside it), and the
/// first step of a shape costs what it did before graphs. Splits change at most every 128 tokens (AttentionSplit), so
/// captures are rare. Generic in the sequence so that the rule is tested without a device.
/// </summary>
internal sealed class DecodeGraphPolicy<TSequence> where TSequence : class
{
    private TSequence? _sequence;
    private AttentionSplit _split;

    public DecodeGraphAction Next(TSequence sequence, AttentionSplit split) =>
        ReferenceEquals(sequence, _sequence) && split == _split ? DecodeGraphAction.Replay : DecodeGraphAction.RunThenCapture;

    /// <summary>A graph of this shape now exists (it replaces any other).</summary>
    public void Captured(TSequence sequence, AttentionSplit split)
    {
        _sequence = sequence;
        _split = split;
    }

    /// <summary>No graph exists (a capture failed or the graph was dropped).</summary>
    public void Forget()
    {
        _sequence = null;
        _split = default;
    }
}
