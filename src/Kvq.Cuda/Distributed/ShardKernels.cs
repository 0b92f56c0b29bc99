namespace Kvq.Cuda.Distributed;

/// <summary>The launcher of shard_combine.cu: the split partials of every shard, gathered [shard][row][split slot],
/// merged into the attention output with attn_merge's arithmetic (<see cref="Merge"/>), on the legacy default stream
/// like the model's kernels.</summary>
internal sealed class ShardKernels : IDisposable
{
    private readonly CudaModule _module;
    private readonly CudaKernel _merge;
    private readonly KernelArgs _a = new();

    public ShardKernels(KernelLoader loader)
    {
        _module = loader.Load(KernelSources.Read("shard_combine.cu"), "shard_combine.cu");
        _merge = _module.Kernel("shard_merge");
    }

    private static uint Pad32(int x) => (uint)((x + 31) / 32 * 32);

    /// <summary>output[row][head dim] from part[shard][rows][stride][head dim + 2] (partials with sum 0 are skipped).</summary>
    public void Merge(ulong part, int shards, int stride, int rows, int headDim, ulong output) =>
        _merge.Launch(new LaunchShape((uint)rows, 1, 1, Pad32(headDim)),
            _a.Clear().Add(part).Add(shards).Add(stride).Add((long)rows).Add(headDim).Add(output));

    public void Dispose()
    {
        _a.Dispose();
        _module.Dispose();
    }
}
