using System.Runtime.InteropServices;

namespace Kvq.Cuda.Native;

/// <summary>The CUDA driver API entry points Kvq uses (libcuda.so.1). Every call returns a CUresult; callers go
/// through <see cref="Check"/>, which turns a failure into a <see cref="CudaException"/> with the driver's name and
/// message for the code.</summary>
internal static unsafe partial class Driver
{
    private const string Lib = NativeLibraries.Cuda;

    [LibraryImport(Lib)] internal static partial int cuInit(uint flags);
    [LibraryImport(Lib)] internal static partial int cuDriverGetVersion(out int version);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Lib)] internal static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetName(byte* name, int len, int device);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(Lib, EntryPoint = "cuDeviceTotalMem_v2")] internal static partial int cuDeviceTotalMem(out nuint bytes, int device);
    [LibraryImport(Lib)] internal static partial int cuDevicePrimaryCtxRetain(out IntPtr ctx, int device);
    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] internal static partial int cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Lib)] internal static partial int cuCtxSetCurrent(IntPtr ctx);
    [LibraryImport(Lib)] internal static partial int cuCtxSynchronize();
    [LibraryImport(Lib, EntryPoint = "cuMemGetInfo_v2")] internal static partial int cuMemGetInfo(out nuint free, out nuint total);
    [LibraryImport(Lib, EntryPoint = "cuMemAlloc_v2")] internal static partial int cuMemAlloc(out ulong ptr, nuint bytes);
    [LibraryImport(Lib, EntryPoint = "cuMemFree_v2")] internal static partial int cuMemFree(ulong ptr);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyHtoD_v2")] internal static partial int cuMemcpyHtoD(ulong dst, void* src, nuint bytes);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoH_v2")] internal static partial int cuMemcpyDtoH(void* dst, ulong src, nuint bytes);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoDAsync_v2")] internal static partial int cuMemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Lib, EntryPoint = "cuMemsetD8Async")] internal static partial int cuMemsetD8Async(ulong dst, byte value, nuint count, IntPtr stream);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoHAsync_v2")] internal static partial int cuMemcpyDtoHAsync(void* dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuMemHostAlloc(out void* p, nuint bytes, uint flags);
    [LibraryImport(Lib)] internal static partial int cuMemFreeHost(void* p);
    [LibraryImport(Lib, EntryPoint = "cuMemHostGetDevicePointer_v2")] internal static partial int cuMemHostGetDevicePointer(out ulong dptr, void* p, uint flags);
    [LibraryImport(Lib)] internal static partial int cuStreamWaitEvent(IntPtr stream, IntPtr ev, uint flags);
    [LibraryImport(Lib)] internal static partial int cuModuleLoadData(out IntPtr module, void* image);
    [LibraryImport(Lib)] internal static partial int cuModuleUnload(IntPtr module);
    [LibraryImport(Lib)] internal static partial int cuModuleGetFunction(out IntPtr function, IntPtr module, byte* name);
    [LibraryImport(Lib)] internal static partial int cuFuncSetAttribute(IntPtr function, int attribute, int value);
    [LibraryImport(Lib)] internal static partial int cuFuncGetAttribute(out int value, int attribute, IntPtr function);
    [LibraryImport(Lib)]
    internal static partial int cuLaunchKernel(IntPtr f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz,
        uint sharedBytes, IntPtr stream, void** args, void** extra);
    [LibraryImport(Lib)] internal static partial int cuStreamCreate(out IntPtr stream, uint flags);
    [LibraryImport(Lib, EntryPoint = "cuStreamDestroy_v2")] internal static partial int cuStreamDestroy(IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuStreamSynchronize(IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuEventCreate(out IntPtr ev, uint flags);
    [LibraryImport(Lib, EntryPoint = "cuEventDestroy_v2")] internal static partial int cuEventDestroy(IntPtr ev);
    [LibraryImport(Lib)] internal static partial int cuEventRecord(IntPtr ev, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuEventSynchronize(IntPtr ev);
    [LibraryImport(Lib)] internal static partial int cuEventElapsedTime(out float ms, IntPtr start, IntPtr end);
    // Stream capture and graphs (CudaGraph). cuda.h maps cuStreamBeginCapture to the _v2 entry (with a capture mode) and
    // cuGraphInstantiate to cuGraphInstantiateWithFlags (CUDA 12); cuGraphLaunch and cuStreamEndCapture without _ptsz
    // treat stream 0 as the legacy default stream, as every other call here does.
    [LibraryImport(Lib, EntryPoint = "cuStreamBeginCapture_v2")] internal static partial int cuStreamBeginCapture(IntPtr stream, int mode);
    [LibraryImport(Lib)] internal static partial int cuStreamEndCapture(IntPtr stream, out IntPtr graph);
    [LibraryImport(Lib)] internal static partial int cuGraphInstantiateWithFlags(out IntPtr exec, IntPtr graph, ulong flags);
    [LibraryImport(Lib)] internal static partial int cuGraphLaunch(IntPtr exec, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuGraphExecDestroy(IntPtr exec);
    [LibraryImport(Lib)] internal static partial int cuGraphDestroy(IntPtr graph);
    [LibraryImport(Lib)] internal static partial int cuGetErrorName(int error, out byte* name);
    [LibraryImport(Lib)] internal static partial int cuGetErrorString(int error, out byte* text);

    internal const int AttrMaxThreadsPerBlock = 1, AttrMaxSharedPerBlockOptin = 97, AttrMultiprocessors = 16,
        AttrComputeMajor = 75, AttrComputeMinor = 76, AttrL2Bytes = 38, AttrMemoryClockKhz = 36, AttrBusWidth = 37;
    internal const int CaptureModeGlobal = 0, CaptureModeThreadLocal = 1, CaptureModeRelaxed = 2;   // CUstreamCaptureMode
    internal const int FuncAttrMaxDynamicShared = 8, FuncAttrNumRegs = 4, FuncAttrLocalBytes = 3, FuncAttrSharedBytes = 1;

    /// <summary>Throws a <see cref="CudaException"/> naming <paramref name="call"/> unless <paramref name="result"/> is CUDA_SUCCESS.</summary>
    internal static void Check(int result, string call)
    {
        if (result != 0) throw Error(result, call);
    }

    internal static CudaException Error(int result, string call)
    {
        string name = $"CUresult {result}", text = "(no message from the driver)";
        try
        {
            if (cuGetErrorName(result, out var n) == 0 && n != null) name = Marshal.PtrToStringUTF8((IntPtr)n) ?? name;
            if (cuGetErrorString(result, out var s) == 0 && s != null) text = Marshal.PtrToStringUTF8((IntPtr)s) ?? text;
        }
        catch (Exception) { /* the message is a courtesy: the code is still reported */ }
        return new CudaException(call, result, name, text);
    }
}
