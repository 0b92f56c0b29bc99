using System.Runtime.InteropServices;
using Kvq.Cuda.Distributed;

namespace Kvq.Cuda.Native;

/// <summary>The NCCL entry points Kvq uses (libnccl.so.2, nccl.h 2.x). Every call returns an ncclResult_t; callers go
/// through <see cref="Check"/>, which turns a failure into an <see cref="NcclException"/> with NCCL's own message.</summary>
internal static unsafe partial class Nccl
{
    private const string Lib = NativeLibraries.Nccl;

    /// <summary>ncclUniqueId: 128 opaque bytes made by rank 0's launcher, passed by value to every rank.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct UniqueId
    {
        public const int Bytes = 128;
        public fixed byte Data[Bytes];
    }

    internal const int Float32 = 7;                       // ncclFloat32
    internal const int Sum = 0, Max = 2;                  // ncclSum, ncclMax

    [LibraryImport(Lib)] internal static partial int ncclGetVersion(out int version);
    [LibraryImport(Lib)] internal static partial int ncclGetUniqueId(UniqueId* id);
    [LibraryImport(Lib)] internal static partial int ncclCommInitRank(out IntPtr comm, int nranks, UniqueId id, int rank);
    [LibraryImport(Lib)] internal static partial int ncclCommDestroy(IntPtr comm);
    [LibraryImport(Lib)] internal static partial int ncclCommAbort(IntPtr comm);
    [LibraryImport(Lib)] internal static partial int ncclCommGetAsyncError(IntPtr comm, out int asyncError);
    [LibraryImport(Lib)] internal static partial int ncclCommCount(IntPtr comm, out int count);
    [LibraryImport(Lib)] internal static partial int ncclCommUserRank(IntPtr comm, out int rank);
    [LibraryImport(Lib)]
    internal static partial int ncclAllGather(ulong sendbuff, ulong recvbuff, nuint sendcount, int datatype, IntPtr comm, IntPtr stream);
    [LibraryImport(Lib)]
    internal static partial int ncclAllReduce(ulong sendbuff, ulong recvbuff, nuint count, int datatype, int op, IntPtr comm, IntPtr stream);
    [LibraryImport(Lib)] internal static partial byte* ncclGetErrorString(int result);
    [LibraryImport(Lib)] internal static partial byte* ncclGetLastError(IntPtr comm);

    internal static void Check(int result, string call, IntPtr comm = default)
    {
        if (result != 0) throw Error(result, call, comm);
    }

    internal static NcclException Error(int result, string call, IntPtr comm = default)
    {
        string text = "(no message from NCCL)", last = "";
        try
        {
            var s = ncclGetErrorString(result);
            if (s != null) text = Marshal.PtrToStringUTF8((IntPtr)s) ?? text;
            var l = ncclGetLastError(comm);
            if (l != null) last = Marshal.PtrToStringUTF8((IntPtr)l) ?? "";
        }
        catch (Exception) { /* the message is a courtesy: the code is still reported */ }
        return new NcclException(call, (NcclResult)result, string.IsNullOrWhiteSpace(last) ? text : $"{text}: {last}");
    }
}
