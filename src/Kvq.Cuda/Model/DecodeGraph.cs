namespace Kvq.Cuda.Model;

/// <summary>
/// The captured single-token decode step of a <see cref="CudaTransformer"/> (embedding, every layer, final norm and
/// output projection: ~20 launches a layer) as one CUDA graph, replayed with one launch per token
/// (<see cref="DecodeGraphPolicy{TSequence}"/> says when it can be). During a capture the model's kernels and cuBLAS go
/// to a stream of its own (the legacy default stream cannot be captured); replays go to the legacy default stream, in
/// order with the step's upload before and the logits' download after.
/// </summary>
internal sealed class DecodeGraph : IDisposable
{
    /// <summary>The environment switch: 1 (or on) replays decode steps from graphs, 0 (or off) launches every kernel
    /// (the reference path); unset, <see cref="CudaModelOptions.DecodeGraphs"/> or its default decides.</summary>
    public const string EnvSwitch = "KVQ_CUDA_GRAPHS";

    private readonly ModelKernels _kernels;
    private readonly CublasHandle _blas;
    private readonly DecodeGraphPolicy<CudaKvSequence> _policy = new();
    private CudaStream? _stream;
    private CudaGraph? _graph;

    public DecodeGraph(ModelKernels kernels, CublasHandle blas)
    {
        _kernels = kernels;
        _blas = blas;
    }

    /// <summary>Steps replayed from a graph, and graphs captured, so far.</summary>
    public long Replays { get; private set; }
    public long Captures { get; private set; }

    /// <summary>Whether graphs are on: <paramref name="option"/> when set, else the value of <see cref="EnvSwitch"/>
    /// (<paramref name="env"/>), else on (run 41, H100: every GPU test passes with graphs and the
    /// graph steps give the direct steps' logits; decode 2.0x faster on books-19m). Anything but 1/0/on/off/true/false in the variable is an error naming it.</summary>
    public static bool Enabled(bool? option, string? env) => OnOffSwitch.Resolve(option, EnvSwitch, env);

    public DecodeGraphAction Next(CudaKvSequence sequence, AttentionSplit split) =>
        _graph == null ? DecodeGraphAction.RunThenCapture : _policy.Next(sequence, split);

    /// <summary>Replays the graph on the legacy default stream.</summary>
    public void Replay()
    {
        _graph!.Launch();
        Replays++;
    }

    /// <summary>Captures what <paramref name="record"/> launches as the graph for <paramref name="sequence"/> at
    /// <paramref name="split"/>, replacing the one held; nothing runs. A failed capture leaves no graph (the next step
    /// runs directly and tries again) and rethrows.</summary>
    public void Capture(CudaKvSequence sequence, AttentionSplit split, Action record)
    {
        Drop();
        _stream ??= new CudaStream();
        _kernels.Stream = _stream;
        _blas.SetStream(_stream);
        try
        {
            _graph = CudaGraph.Capture(_stream, record);
        }
        finally
        {
            _kernels.Stream = null;
            _blas.SetStream(null);
        }
        _policy.Captured(sequence, split);
        Captures++;
    }

    /// <summary>Lets the graph go (it names a sequence's buffers).</summary>
    public void Drop()
    {
        _graph?.Dispose();
        _graph = null;
        _policy.Forget();
    }

    public void Dispose()
    {
        Drop();
        _stream?.Dispose();
        _stream = null;
    }
}
