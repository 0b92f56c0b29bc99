using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// Where each logical block of an <see cref="OffloadedKvSequence"/> lives: its device-home physical block (rented from
/// the pool as the sequence grows, listed in a block table on the device for the append and prefill kernels) or its
/// slot in the pinned host tier (<see cref="HostTier"/>), and how many blocks each tier holds against its size.
/// </summary>
internal sealed class BlockHomes : IDisposable
{
    private const int BT = CudaKvCache.BlockTokens;
    private readonly CudaKvCache _pool;
    private readonly OffloadSizes _sizes;
    private readonly int[] _home;        // logical block -> device-home physical block, -1 when not home on the device
    private readonly int[] _hostIndex;   // logical block -> host slot, -1 when not on the host

    /// <summary>The device-home block table (int per logical block, model.cu phys).</summary>
    public DeviceBuffer Table { get; }
    /// <summary>Blocks held so far (device-home or moved): the sequence's first <see cref="Held"/> blocks.</summary>
    public int Held { get; private set; }
    /// <summary>Blocks whose home is the host tier.</summary>
    public int HostUsed { get; private set; }

    public BlockHomes(CudaContext ctx, CudaKvCache pool, int maxBlocks, OffloadSizes sizes)
    {
        _pool = pool;
        _sizes = sizes;
        _home = new int[maxBlocks];
        _hostIndex = new int[maxBlocks];
        Array.Fill(_home, -1);
        Array.Fill(_hostIndex, -1);
        Table = ctx.Allocate(maxBlocks * 4L);
    }

    public bool OnHost(int block) => _hostIndex[block] >= 0;
    public int HostSlot(int block) => _hostIndex[block];
    public int DeviceHome(int block) => _home[block];

    /// <summary>Device-home blocks for the sequence's first <paramref name="tokens"/> tokens.</summary>
    public void Hold(int tokens)
    {
        int need = (tokens + BT - 1) / BT, first = Held;
        if (need <= Held) return;
        if (need - Held > _pool.FreeBlocks)
            throw new InvalidOperationException($"offloaded KV sequence: the device tier is full ({_sizes.DeviceBlocks} home blocks); move blocks to the host first (MoveToHost)");
        while (Held < need) _home[Held++] = _pool.Rent();
        Table.CopyFrom(_home.AsSpan(first, Held - first), first * 4L);
    }

    /// <summary>Checks that blocks [<paramref name="from"/>, <paramref name="to"/>) are whole, committed, device-home and
    /// fit in the host tier.</summary>
    public void CheckMove(int from, int to, int length)
    {
        if (from < 0 || to <= from || (long)to * BT > length)
            throw new ArgumentOutOfRangeException(nameof(to), $"blocks {from}..{to} of a sequence of {length} tokens (whole blocks only)");
        for (int b = from; b < to; b++)
            if (_home[b] < 0) throw new InvalidOperationException($"block {b} is not on the device");
        if (HostUsed + (to - from) > _sizes.HostBlocks)
            throw new HostMemoryException($"the host tier holds {_sizes.HostBlocks} blocks: {HostUsed} used, {to - from} more asked");
    }

    /// <summary>Blocks [<paramref name="from"/>, <paramref name="to"/>), copied to host slots <see cref="HostUsed"/>
    /// onwards, are home there now; their device slots go back to the pool.</summary>
    public void Moved(int from, int to)
    {
        for (int b = from; b < to; b++)
        {
            _hostIndex[b] = HostUsed++;
            _pool.Return(_home[b]);
            _home[b] = -1;
        }
    }

    public void Dispose() => Table?.Dispose();
}
