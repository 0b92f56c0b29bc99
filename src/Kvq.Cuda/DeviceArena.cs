namespace Kvq.Cuda;

/// <summary>
/// One device allocation handed out in 256-byte-aligned slices (<see cref="DeviceBuffer.Slice"/>): the arrays of a
/// sequence's cache in one cuMemAlloc instead of hundreds, each of which the driver rounds up to its 2 MiB page. A
/// request that no longer fits gets an allocation of its own (owned by the arena too), so a low estimate costs
/// memory, never a failure. Disposing the arena frees everything it handed out.
/// </summary>
public sealed class DeviceArena : IDisposable
{
    private const long Align = 256;
    private readonly CudaContext _ctx;
    private readonly DeviceBuffer _block;
    private readonly List<DeviceBuffer> _own = new();
    private long _used;

    public DeviceArena(CudaContext ctx, long bytes)
    {
        _ctx = ctx;
        _block = ctx.Allocate(Math.Max(bytes, Align));
    }

    /// <summary>Device bytes the arena holds (its block and any overflow allocations).</summary>
    public long Bytes => _block.Bytes + _own.Sum(b => b.Bytes);

    /// <summary>Bytes of the block handed out so far.</summary>
    public long Used => _used;

    /// <summary>Bytes a list of arrays takes in an arena (each rounded up to the alignment).</summary>
    public static long SizeFor(IEnumerable<long> arrays) => arrays.Sum(b => (Math.Max(b, 1) + Align - 1) / Align * Align);

    public DeviceBuffer Take(long bytes)
    {
        long n = (Math.Max(bytes, 1) + Align - 1) / Align * Align;
        if (_used + n <= _block.Bytes)
        {
            var s = _block.Slice(_used, bytes);
            _used += n;
            return s;
        }
        var b = _ctx.Allocate(bytes);
        _own.Add(b);
        return b;
    }

    public void Dispose()
    {
        foreach (var b in _own) b.Dispose();
        _own.Clear();
        _block.Dispose();
    }
}
