namespace Kvq.Cache.Paging;

/// <summary>
/// Doubly linked list over block ids 0..N-1, held in two int arrays so that push, pop and remove-from-the-middle are
/// O(1) and allocate nothing. The front is the next block handed out; the back is the most recently released cached
/// block, the last to be evicted. Each id is in the list at most once.
/// </summary>
internal sealed class FreeBlockList
{
    private const int NotInList = -1;
    // Links indexed by block id; index N is the sentinel, so the list is circular through it and needs no null checks.
    private readonly int[] _next;
    private readonly int[] _prev;
    private readonly int _sentinel;

    public int Count { get; private set; }

    /// <summary>An empty list that can hold block ids 0..capacity-1.</summary>
    public FreeBlockList(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        _sentinel = capacity;
        _next = new int[capacity + 1];
        _prev = new int[capacity + 1];
        Array.Fill(_next, NotInList);
        Array.Fill(_prev, NotInList);
        _next[_sentinel] = _sentinel;
        _prev[_sentinel] = _sentinel;
    }

    public bool Contains(int id) => _next[id] != NotInList;

    /// <summary>First id (next to be popped), or -1 when empty.</summary>
    public int First => Count == 0 ? -1 : _next[_sentinel];

    /// <summary>The id after <paramref name="id"/> towards the back, or -1 at the end.</summary>
    public int Next(int id)
    {
        int n = _next[id];
        return n == _sentinel ? -1 : n;
    }

    /// <summary>The id before <paramref name="id"/> towards the front, or -1 at the start.</summary>
    public int Previous(int id)
    {
        int p = _prev[id];
        return p == _sentinel ? -1 : p;
    }

    /// <summary>Last id (most recently pushed to the back), or -1 when empty.</summary>
    public int Last => Count == 0 ? -1 : _prev[_sentinel];

    public void PushFront(int id) => InsertAfter(_sentinel, id);

    public void PushBack(int id) => InsertAfter(_prev[_sentinel], id);

    public int PopFront()
    {
        if (Count == 0) throw new InvalidOperationException("free block list is empty");
        int id = _next[_sentinel];
        Remove(id);
        return id;
    }

    public void Remove(int id)
    {
        if (!Contains(id)) throw new InvalidOperationException($"block {id} is not in the free list");
        int p = _prev[id], n = _next[id];
        _next[p] = n;
        _prev[n] = p;
        _next[id] = NotInList;
        _prev[id] = NotInList;
        Count--;
    }

    private void InsertAfter(int at, int id)
    {
        if ((uint)id >= (uint)_sentinel)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"block id must be in 0..{_sentinel - 1}");
        if (Contains(id)) throw new InvalidOperationException($"block {id} is already in the free list");
        int n = _next[at];
        _next[at] = id;
        _prev[id] = at;
        _next[id] = n;
        _prev[n] = id;
        Count++;
    }
}
