using Kvq.Cache;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// The kernels an <see cref="OffloadedKvSequence"/> runs on its paged KVQuant layout: the device encoders at append
/// (through the device-home block table), tiled prefill attention over the device-home blocks, and decode attention
/// (model.cu attn_nuq_part) over per-head block lists; with what they share: the RoPE angle table, the split-K scratch
/// and the exact sink copies per layer.
/// </summary>
internal sealed class OffloadAttention : IDisposable
{
    private readonly CudaContext _ctx;
    private readonly ModelKernels _kernels;
    private readonly KvShape _shape;
    private readonly RopeParams _rope;
    private readonly int _sink;
    private readonly DeviceBuffer _table, _part;
    private readonly DeviceBuffer[] _sinkK, _sinkV;

    public long DeviceBytes => (_table?.Bytes ?? 0) + (_part?.Bytes ?? 0) + _sinkK.Sum(b => b?.Bytes ?? 0) + _sinkV.Sum(b => b?.Bytes ?? 0);

    public OffloadAttention(CudaContext ctx, ModelKernels kernels, KvShape shape, RopeParams rope, int sink, long capacity)
    {
        _ctx = ctx;
        _kernels = kernels;
        _shape = shape;
        _rope = rope;
        _sink = sink;
        _sinkK = new DeviceBuffer[shape.Layers];
        _sinkV = new DeviceBuffer[shape.Layers];
        try
        {
            long rows = 128 + capacity / 128, rowBytes = shape.Rope.RopeDims / 2 * 8L;
            _table = ctx.Allocate(rows * rowBytes);
            kernels.RopeTable(rows, rope, _table);
            _part = ctx.Allocate((long)CudaKvSequence.MaxSplitStates * shape.Heads * (shape.HeadDim + 2) * 4);
            for (int l = 0; l < shape.Layers; l++)
            {
                _sinkK[l] = ctx.Allocate((long)shape.KvHeads * Math.Max(sink, 1) * shape.HeadDim * 2);
                _sinkV[l] = ctx.Allocate((long)shape.KvHeads * Math.Max(sink, 1) * shape.HeadDim * 2);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Encodes <paramref name="n"/> keys and values (f32 [n][KV dim], keys pre-RoPE) at slot
    /// <paramref name="slot"/> through the block table <paramref name="blockTable"/>.</summary>
    public void Append(int layer, NuqDeviceLayer nuq, ulong k, ulong v, int n, int slot, ulong blockTable)
    {
        _kernels.AppendNuqKeys(k, n, _shape.KvHeads, _shape.HeadDim, slot, nuq, _sink, _sinkK[layer].Pointer, blockTable);
        _kernels.AppendNuqValues(v, n, _shape.KvHeads, _shape.HeadDim, slot, nuq, _sink, _sinkV[layer].Pointer, blockTable);
    }

    /// <summary>A chunk of <paramref name="n"/> queries over the first <paramref name="count"/> tokens, all device-home.</summary>
    public void Prefill(int layer, NuqDeviceLayer nuq, long poolTokens, ulong q, int n, long count, ulong output, ulong blockTable)
    {
        var split = AttentionSplit.For(count, n, _shape.KvHeads, _ctx.Device.Multiprocessors, CudaKvSequence.MaxSplitStates);
        _kernels.AttentionTile(q, null, null, nuq, _table, poolTokens, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split,
            _shape.ScoreScale, _part.Pointer, output, _sink, (_sinkK[layer].Pointer, _sinkV[layer].Pointer), _rope, blockTable);
    }

    /// <summary>One query over the blocks of <paramref name="lists"/> (<paramref name="longest"/>: the longest head's tokens).</summary>
    public void Decode(int layer, NuqDeviceLayer nuq, ulong q, ulong output, ulong slots, HeadBlocks lists, long longest)
    {
        var split = AttentionSplit.For(longest, 1, _shape.KvHeads, _ctx.Device.Multiprocessors, CudaKvSequence.MaxSplitStates);
        _kernels.AttentionNuq(q, nuq, _table, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, longest, 1, split, _shape.ScoreScale, _part.Pointer,
            output, _sink, (_sinkK[layer].Pointer, _sinkV[layer].Pointer), _rope, slots, lists);
    }

    public void Dispose()
    {
        _table?.Dispose();
        _part?.Dispose();
        foreach (var b in _sinkK) b?.Dispose();
        foreach (var b in _sinkV) b?.Dispose();
    }
}
