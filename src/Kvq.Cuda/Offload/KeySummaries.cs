using Kvq.Cache;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// The per-block key summaries an <see cref="OffloadedKvSequence"/> keeps on the device: per layer, KV head and
/// 128-token block the per-channel min and max of the keys after RoPE, f16 rounded outward ([KV head][block][min | max]
/// [head dim]; model.cu offload_summarize), folded in at append from the f32 keys the model hands the cache. They stay
/// on the device when a block moves to the host: <see cref="BlockScorer"/> ranks from them.
/// </summary>
internal sealed class KeySummaries : IDisposable
{
    private readonly ModelKernels _kernels;
    private readonly KvShape _shape;
    private readonly RopeParams _rope;
    private readonly DeviceBuffer[] _sum;

    public int MaxBlocks { get; }
    public long Bytes => _sum.Sum(b => b?.Bytes ?? 0);

    public KeySummaries(CudaContext ctx, ModelKernels kernels, KvShape shape, RopeParams rope, int maxBlocks)
    {
        _kernels = kernels;
        _shape = shape;
        _rope = rope;
        MaxBlocks = maxBlocks;
        _sum = new DeviceBuffer[shape.Layers];
        try
        {
            for (int l = 0; l < shape.Layers; l++)
            {
                _sum[l] = ctx.Allocate((long)shape.KvHeads * maxBlocks * 2 * shape.HeadDim * 2);
                _sum[l].Fill(0);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Layer <paramref name="layer"/>'s summaries.</summary>
    public DeviceBuffer Layer(int layer) => _sum[layer];

    /// <summary>Folds <paramref name="n"/> new pre-RoPE keys (f32 [n][KV dim], positions <paramref name="pos0"/>..) into
    /// the layer's summaries.</summary>
    public void Add(int layer, ulong k, int n, int pos0) => _kernels.OffloadSummarize(k, n, _shape.KvHeads, _rope, pos0, MaxBlocks, _sum[layer]);

    public void Dispose()
    {
        foreach (var b in _sum) b?.Dispose();
    }
}
