using Kvq.Cache;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// The pinned host tier of an <see cref="OffloadedKvSequence"/> and the addresses of a block's copies: which of a layer's
/// paged nuq arrays move with a block (<see cref="NuqDeviceLayer.PagedArrays"/>, less the slot arrays of a layout
/// without outliers, allocated but never read), their bytes per token slot, and per layer and moved array a pinned,
/// mapped buffer [KV head][host block][128 x slot bytes] (<see cref="PinnedHostBuffer"/>). A copy job moves one array
/// of one KV head of one block (model.cu offload_copy reads the host side through its device address).
/// </summary>
internal sealed class HostTier : IDisposable
{
    private const int BT = CudaKvCache.BlockTokens;
    private readonly CudaKvCache _pool;
    private readonly int _hostBlocks;
    private readonly int[] _arrayIndex, _arraySlotBytes;
    private readonly PinnedHostBuffer[][] _host;   // [layer][moved array]

    /// <summary>Copy jobs per (layer, KV head, block): the moved arrays.</summary>
    public int Arrays { get; }
    /// <summary>Bytes per (layer, KV head, block) in either tier.</summary>
    public long BlockBytes { get; }
    /// <summary>Pinned bytes allocated.</summary>
    public long Bytes => _host.Sum(l => l?.Sum(b => b?.Bytes ?? 0) ?? 0);

    public HostTier(CudaContext ctx, CudaKvCache pool, KvShape shape, int hostBlocks)
    {
        _pool = pool;
        _hostBlocks = hostBlocks;
        var nuq0 = pool.Nuq![0];
        var moved = new List<int>();
        for (int a = 0; a < nuq0.PagedArrays.Length; a++)
        {
            // Slot arrays of a layout without outliers are allocated (one byte or two per slot) but never read.
            bool unused = (a is 1 or 2 && nuq0.KeySlots == 0) || (a is 5 or 6 && nuq0.ValueOutliersPerTail == 0);
            if (!unused) moved.Add(a);
        }
        _arrayIndex = moved.ToArray();
        Arrays = _arrayIndex.Length;
        _arraySlotBytes = _arrayIndex.Select(a => nuq0.PagedArrays[a].SlotBytes).ToArray();
        BlockBytes = BT * _arraySlotBytes.Sum();
        _host = new PinnedHostBuffer[shape.Layers][];
        try
        {
            for (int l = 0; l < shape.Layers; l++)
            {
                _host[l] = new PinnedHostBuffer[Arrays];
                if (hostBlocks > 0)
                    for (int a = 0; a < Arrays; a++)
                        _host[l][a] = new PinnedHostBuffer(ctx, (long)shape.KvHeads * hostBlocks * BT * _arraySlotBytes[a], $"the host tier (layer {l})");
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The copy of moved array <paramref name="a"/> of a host block into device slot <paramref name="phys"/>.</summary>
    public CopyJob ToDevice(int layer, int a, int head, int hostSlot, long phys) =>
        new(HostAddress(layer, a, head, hostSlot), DeviceAddress(layer, a, head, phys), (long)BT * _arraySlotBytes[a]);

    /// <summary>The copy of moved array <paramref name="a"/> of device slot <paramref name="phys"/> to a host slot.</summary>
    public CopyJob ToHost(int layer, int a, int head, long phys, int hostSlot) =>
        new(DeviceAddress(layer, a, head, phys), HostAddress(layer, a, head, hostSlot), (long)BT * _arraySlotBytes[a]);

    private ulong DeviceAddress(int layer, int a, int head, long phys) =>
        _pool.Nuq![layer].PagedArrays[_arrayIndex[a]].Buffer.Pointer + (ulong)((head * _pool.MaxTokens + phys * BT) * _arraySlotBytes[a]);

    private ulong HostAddress(int layer, int a, int head, int hostSlot) =>
        _host[layer][a].DevicePointer + (ulong)(((long)head * _hostBlocks + hostSlot) * BT * _arraySlotBytes[a]);

    public void Dispose()
    {
        foreach (var l in _host) if (l != null) foreach (var b in l) b?.Dispose();
    }
}
