using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;
using Kvq.Cuda.Native;

namespace Kvq.Cuda.Offload;

/// <summary>
/// One query's block estimates: model.cu offload_score computes the rule's estimate (q·c + s·Σ|q_i|w_i, the CPU tier's
/// <see cref="BlockSummaries"/> estimate with s = the budget's spread) for every visible block, KV head and query head
/// of the group from the device's <see cref="KeySummaries"/>, and the estimates come down into pinned memory, where
/// <see cref="BlockSelector.Rank"/> reads them ([KV head][block][group] f32). All on the legacy default stream.
/// </summary>
internal sealed class BlockScorer : IDisposable
{
    private readonly ModelKernels _kernels;
    private readonly KvShape _shape;
    private readonly KvOffloadBudget _budget;
    private readonly KeySummaries _summaries;
    private readonly DeviceBuffer _dev;
    private readonly PinnedHostBuffer _host;

    public long DeviceBytes => _dev?.Bytes ?? 0;

    public BlockScorer(CudaContext ctx, ModelKernels kernels, KvShape shape, KvOffloadBudget budget, KeySummaries summaries)
    {
        _kernels = kernels;
        _shape = shape;
        _budget = budget;
        _summaries = summaries;
        _dev = ctx.Allocate((long)shape.KvHeads * summaries.MaxBlocks * shape.GroupSize * 4);
        try
        {
            _host = new PinnedHostBuffer(ctx, _dev.Bytes, "block estimates");
        }
        catch
        {
            _dev.Dispose();
            throw;
        }
    }

    /// <summary>Scores blocks [0, <paramref name="visible"/>) of <paramref name="layer"/> for query <paramref name="q"/>
    /// (f32 [Q dim], post-RoPE) on the device.</summary>
    public void Score(int layer, ulong q, int visible) =>
        _kernels.OffloadScore(q, _shape.GroupSize, _shape.HeadDim, _shape.KvHeads, visible, _summaries.MaxBlocks, _summaries.Layer(layer),
            _shape.ScoreScale, _budget.Spread / 100f, _dev.Pointer);

    /// <summary>Queues the copy of the estimates of <paramref name="visible"/> blocks into pinned memory (read them once
    /// the default stream has been synchronized).</summary>
    public unsafe void CopyDown(int visible) =>
        Driver.Check(Driver.cuMemcpyDtoHAsync(_host.Host, _dev.Pointer, (nuint)((long)_shape.KvHeads * visible * _shape.GroupSize * 4), IntPtr.Zero),
            "cuMemcpyDtoHAsync");

    /// <summary>KV head <paramref name="head"/>'s estimates ([block][group]) of <paramref name="visible"/> blocks.</summary>
    public Span<float> Estimates(int head, int visible) =>
        _host.AsSpan<float>((long)head * visible * _shape.GroupSize * 4, visible * _shape.GroupSize);

    public void Dispose()
    {
        _dev?.Dispose();
        _host?.Dispose();
    }
}
