using System.Runtime.InteropServices;

namespace Kvq.Cuda.Native;

/// <summary>cuBLAS (libcublas.so.N): the handle and the mixed-precision GEMM Kvq uses.</summary>
internal static unsafe partial class Cublas
{
    private const string Lib = NativeLibraries.Cublas;

    [LibraryImport(Lib, EntryPoint = "cublasCreate_v2")] internal static partial int cublasCreate(out IntPtr handle);
    [LibraryImport(Lib, EntryPoint = "cublasDestroy_v2")] internal static partial int cublasDestroy(IntPtr handle);
    [LibraryImport(Lib, EntryPoint = "cublasSetStream_v2")] internal static partial int cublasSetStream(IntPtr handle, IntPtr stream);
    [LibraryImport(Lib, EntryPoint = "cublasSetWorkspace_v2")] internal static partial int cublasSetWorkspace(IntPtr handle, ulong workspace, nuint bytes);
    [LibraryImport(Lib)]
    internal static partial int cublasGemmEx(IntPtr handle, int transa, int transb, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, ulong b, int bType, int ldb, void* beta, ulong c, int cType, int ldc,
        int computeType, int algo);
    [LibraryImport(Lib)] internal static partial IntPtr cublasGetStatusString(int status);

    internal const int OpN = 0, OpT = 1, R16F = 2, R32F = 0, Compute32F = 68, GemmDefault = -1;

    internal static void Check(int status, string call)
    {
        if (status == 0) return;
        string text;
        try { text = Marshal.PtrToStringUTF8(cublasGetStatusString(status)) ?? "unknown"; }
        catch (Exception) { text = "unknown"; }
        throw new CudaException(call, status, $"cublasStatus {status}", text);
    }
}
