using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// The device slots an <see cref="OffloadedKvSequence"/> reads host blocks from: a pool block per working slot (the
/// same physical blocks for every layer and KV head) and per (layer, KV head) a <see cref="WorkingSet"/> saying which
/// host block each slot holds. <see cref="Admit"/> takes a KV head's chosen blocks: it counts those already on the device
/// (hits, and of them the prefetched ones read for the first time), makes room for the others and lists their copies.
/// </summary>
internal sealed class WorkingSlots
{
    private readonly int _heads;
    private readonly BlockHomes _homes;
    private readonly HostTier _host;
    private readonly int[] _work;        // working slot -> physical block
    private readonly WorkingSet[] _ws;   // [layer x KV heads + head]

    /// <summary>Takes <paramref name="slots"/> blocks from the pool (before any device-home block is rented).</summary>
    public WorkingSlots(CudaKvCache pool, BlockHomes homes, HostTier host, int layers, int heads, int slots, int maxBlocks)
    {
        _heads = heads;
        _homes = homes;
        _host = host;
        _work = new int[slots];
        for (int i = 0; i < _work.Length; i++) _work[i] = pool.Rent();
        _ws = new WorkingSet[layers * heads];
        for (int i = 0; i < _ws.Length; i++) _ws[i] = new WorkingSet(slots, maxBlocks);
    }

    /// <summary>The physical block attention reads <paramref name="block"/> from (its device home, or the working slot
    /// that holds it once admitted).</summary>
    public int PhysicalOf(int layer, int head, int block) =>
        _homes.OnHost(block) ? _work[_ws[layer * _heads + head].SlotOf(block)] : _homes.DeviceHome(block);

    /// <summary>
    /// Admits KV head <paramref name="head"/>'s <paramref name="chosen"/> blocks of <paramref name="layer"/>: host blocks
    /// on the device are touched (most recently used), missing ones take the least recently used slots and their copies
    /// are listed in <paramref name="jobs"/> (cleared first). Returns false, admitting nothing, when a prediction
    /// (<paramref name="prefetch"/>) chose more host blocks than the slots; a real choice that does throws.
    /// </summary>
    public bool Admit(int layer, int head, ReadOnlySpan<int> chosen, bool prefetch, List<CopyJob> jobs, out HeadCounts counts)
    {
        counts = default;
        var ws = _ws[layer * _heads + head];
        jobs.Clear();
        int hostChosen = 0;
        foreach (int b in chosen) if (_homes.OnHost(b)) hostChosen++;
        if (hostChosen > ws.Slots)
        {
            // More host blocks than working slots: a prediction is dropped; a real choice cannot be served.
            if (prefetch) return false;
            throw new InvalidOperationException($"offloaded KV sequence: layer {layer}, KV head {head} chose {hostChosen} host blocks, more than its " +
                                                $"{ws.Slots} working slots (OffloadSizes.WorkingBlocks)");
        }
        long hits = 0, used = 0, host = 0;
        foreach (int b in chosen)
        {
            if (!_homes.OnHost(b)) continue;
            host++;
            int s = ws.SlotOf(b);
            if (s < 0) continue;
            hits++;
            if (ws.Touch(s, read: !prefetch)) used++;
        }
        foreach (int b in chosen)
        {
            if (!_homes.OnHost(b) || ws.SlotOf(b) >= 0) continue;
            long phys = _work[ws.Take(b, prefetch)];
            for (int a = 0; a < _host.Arrays; a++) jobs.Add(_host.ToDevice(layer, a, head, _homes.HostSlot(b), phys));
        }
        counts = new HeadCounts(hits, used, host);
        return true;
    }
}

/// <summary>One KV head's admission: chosen host blocks already on the device, of them those speculation had brought
/// in and nothing had read yet, and all chosen host blocks.</summary>
internal readonly record struct HeadCounts(long Hits, long PrefetchedUsed, long HostChosen);
