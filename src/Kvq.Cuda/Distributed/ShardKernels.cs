namespace Kvq.Cuda.Distributed;

/// <summary>The launchers of shard_combine.cu: a shard's split partials folded into one state per query row
/// (<see cref="State"/>), and the states of all shards merged into the attention output (<see cref="Combine"/>), on
/// the legacy default stream like the model's kernels.</summary>
internal sealed class ShardKernels : IDisposable
{
    private readonly CudaModule _module;
    private readonly CudaKernel _state, _combine;
    private readonly KernelArgs _a = new();

    public ShardKernels(KernelLoader loader)
    {
        _module = loader.Load(KernelSources.Read("shard_combine.cu"), "shard_combine.cu");
        _state = _module.Kernel("shard_state");
        _combine = _module.Kernel("shard_combine");
    }

    private static uint Pad32(int x) => (uint)((x + 31) / 32 * 32);

    /// <summary>state[row] (head dim + 2 floats) = the fold of part[row][0..splits) for <paramref name="rows"/> rows.</summary>
    public void State(ulong part, int splits, int rows, int headDim, ulong state) =>
        _state.Launch(new LaunchShape((uint)rows, 1, 1, Pad32(headDim)), _a.Clear().Add(part).Add(splits).Add(headDim).Add(state));

    /// <summary>output[row][head dim] from state[shard][rows][head dim + 2].</summary>
    public void Combine(ulong states, int shards, int rows, int headDim, ulong output) =>
        _combine.Launch(new LaunchShape((uint)rows, 1, 1, Pad32(headDim)), _a.Clear().Add(states).Add(shards).Add((long)rows).Add(headDim).Add(output));

    public void Dispose()
    {
        _a.Dispose();
        _module.Dispose();
    }
}
