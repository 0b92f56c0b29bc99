namespace Kvq.Cuda.Offload;

/// <summary>
/// One (layer, KV head)'s device slots for host-tier blocks: which block each of the <see cref="Slots"/> working slots
/// holds, least recently used first (a doubly linked list over the slots, O(1) per touch and per eviction). A block
/// chosen this step is touched before any slot is taken for a miss, so a miss never evicts a block the same step reads
/// while the slots number at least the blocks chosen.
/// </summary>
internal sealed class WorkingSet
{
    private readonly int[] _slotOf;    // block -> slot, -1 when not on the device
    private readonly int[] _owner;     // slot -> block, -1 when free
    private readonly bool[] _prefetched;   // brought in by speculation and not read yet
    private readonly int[] _prev, _next;   // LRU list, sentinel = Slots (head: least recent)

    public int Slots { get; }

    public WorkingSet(int slots, int maxBlocks)
    {
        Slots = slots;
        _slotOf = new int[maxBlocks];
        Array.Fill(_slotOf, -1);
        _owner = new int[slots];
        Array.Fill(_owner, -1);
        _prefetched = new bool[slots];
        _prev = new int[slots + 1];
        _next = new int[slots + 1];
        int s = slots;
        _next[s] = _prev[s] = s;
        for (int i = 0; i < slots; i++) LinkLast(i);
    }

    /// <summary>The slot holding <paramref name="block"/>, or -1.</summary>
    public int SlotOf(int block) => _slotOf[block];

    /// <summary>Marks a held block used now; returns whether speculation had brought it in and it was not read yet.</summary>
    public bool Touch(int slot, bool read)
    {
        Unlink(slot);
        LinkLast(slot);
        bool was = _prefetched[slot];
        if (read) _prefetched[slot] = false;
        return was;
    }

    /// <summary>Takes the least recently used slot for <paramref name="block"/> (evicting its block) and returns it.</summary>
    public int Take(int block, bool prefetch)
    {
        int slot = _next[Slots];
        if (slot == Slots) throw new InvalidOperationException("an offloaded sequence's working set has no slots");
        if (_owner[slot] >= 0) _slotOf[_owner[slot]] = -1;
        _owner[slot] = block;
        _slotOf[block] = slot;
        _prefetched[slot] = prefetch;
        Unlink(slot);
        LinkLast(slot);
        return slot;
    }

    private void Unlink(int i)
    {
        _next[_prev[i]] = _next[i];
        _prev[_next[i]] = _prev[i];
    }

    private void LinkLast(int i)
    {
        int s = Slots, last = _prev[s];
        _next[last] = i;
        _prev[i] = last;
        _next[i] = s;
        _prev[s] = i;
    }
}
