using Kvq.Cuda.Native;

namespace Kvq.Cuda.Distributed;

/// <summary>
/// One rank of an NCCL communicator (one process per GPU, NCCL's usual setup): made from the unique id that the
/// launcher got from <see cref="CreateUniqueId"/> and handed to every rank (as hex text, <c>KVQ_NCCL_ID</c>), on the
/// device whose context is current. Collectives run on the legacy default stream, in order with the model's kernels.
/// NCCL is called through <c>[LibraryImport]</c> (libnccl.so.2 from PyTorch's wheels or a system install; KVQ_NCCL
/// names the file): there is no managed NCCL binding to use.
/// </summary>
public sealed class NcclCommunicator : IShardExchange, IDisposable
{
    private IntPtr _comm;
    private readonly CudaContext _ctx;

    public int Rank { get; }
    public int WorldSize { get; }

    private NcclCommunicator(CudaContext ctx, IntPtr comm, int rank, int world)
    {
        _ctx = ctx;
        _comm = comm;
        Rank = rank;
        WorldSize = world;
    }

    /// <summary>NCCL's version (e.g. 22703 for 2.27.3); throws <see cref="CudaUnavailableException"/> when no NCCL
    /// library is found.</summary>
    public static int Version()
    {
        NativeLibraries.Require(NativeLibraries.Nccl);
        Nccl.Check(Nccl.ncclGetVersion(out int v), "ncclGetVersion");
        return v;
    }

    /// <summary>A new unique id (ncclGetUniqueId) as 256 hex digits, for the launcher to pass to every rank.</summary>
    public static unsafe string CreateUniqueId()
    {
        NativeLibraries.Require(NativeLibraries.Nccl);
        Nccl.UniqueId id;
        Nccl.Check(Nccl.ncclGetUniqueId(&id), "ncclGetUniqueId");
        return Convert.ToHexString(new ReadOnlySpan<byte>(id.Data, Nccl.UniqueId.Bytes));
    }

    /// <summary>Joins the communicator as rank <paramref name="rank"/> of <paramref name="worldSize"/> on
    /// <paramref name="ctx"/>'s device (ncclCommInitRank; blocks until every rank has joined).</summary>
    public static unsafe NcclCommunicator Create(CudaContext ctx, int rank, int worldSize, string uniqueIdHex)
    {
        if (worldSize < 1 || rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} of a world of {worldSize}");
        byte[] bytes;
        try { bytes = Convert.FromHexString(uniqueIdHex.Trim()); }
        catch (FormatException) { bytes = []; }
        if (bytes.Length != Nccl.UniqueId.Bytes)
            throw new ArgumentException($"an NCCL unique id is {Nccl.UniqueId.Bytes} bytes as {2 * Nccl.UniqueId.Bytes} hex digits; got '{Trim(uniqueIdHex)}'", nameof(uniqueIdHex));
        NativeLibraries.Require(NativeLibraries.Nccl);
        var id = new Nccl.UniqueId();
        for (int i = 0; i < bytes.Length; i++) id.Data[i] = bytes[i];
        ctx.MakeCurrent();
        Nccl.Check(Nccl.ncclCommInitRank(out var comm, worldSize, id, rank), $"ncclCommInitRank(rank {rank} of {worldSize})");
        return new NcclCommunicator(ctx, comm, rank, worldSize);
    }

    private static string Trim(string s) => s.Length <= 16 ? s : s[..16] + "...";

    private IntPtr Comm => _comm != IntPtr.Zero ? _comm : throw new ObjectDisposedException(nameof(NcclCommunicator));

    public void AllGather(ulong buffer, long bytesPerRank)
    {
        if (bytesPerRank % 4 != 0) throw new ArgumentException($"an all-gather of f32 states: {bytesPerRank} bytes per rank", nameof(bytesPerRank));
        Nccl.Check(Nccl.ncclAllGather(buffer + (ulong)(Rank * bytesPerRank), buffer, (nuint)(bytesPerRank / 4), Nccl.Float32, Comm, IntPtr.Zero),
            "ncclAllGather", _comm);
    }

    /// <summary>In-place sum (or max) over the ranks of <paramref name="floats"/> f32 values at <paramref name="buffer"/>.</summary>
    public void AllReduce(ulong buffer, long floats, bool max = false) =>
        Nccl.Check(Nccl.ncclAllReduce(buffer, buffer, (nuint)floats, Nccl.Float32, max ? Nccl.Max : Nccl.Sum, Comm, IntPtr.Zero), "ncclAllReduce", _comm);

    /// <summary>Waits for the device, then reports an error another rank's failure left in the communicator (a rank
    /// that died shows here, or as a failed collective, instead of a silent hang when it is polled).</summary>
    public void Synchronize()
    {
        _ctx.Synchronize();
        Nccl.Check(Nccl.ncclCommGetAsyncError(Comm, out int async), "ncclCommGetAsyncError", _comm);
        if (async != 0) throw Nccl.Error(async, "a collective (asynchronous error)", _comm);
    }

    public void Dispose()
    {
        if (_comm == IntPtr.Zero) return;
        _ctx.MakeCurrent();
        Nccl.ncclCommDestroy(_comm);
        _comm = IntPtr.Zero;
    }
}
