using System.Runtime.InteropServices;

namespace Kvq.Cuda.Native;

/// <summary>NVRTC, the run-time CUDA C++ compiler (libnvrtc.so.N).</summary>
internal static unsafe partial class Nvrtc
{
    private const string Lib = NativeLibraries.Nvrtc;

    [LibraryImport(Lib)] internal static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(Lib)] internal static partial int nvrtcCreateProgram(out IntPtr prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Lib)] internal static partial int nvrtcDestroyProgram(ref IntPtr prog);
    [LibraryImport(Lib)] internal static partial int nvrtcCompileProgram(IntPtr prog, int numOptions, byte** options);
    [LibraryImport(Lib)] internal static partial int nvrtcGetProgramLogSize(IntPtr prog, out nuint size);
    [LibraryImport(Lib)] internal static partial int nvrtcGetProgramLog(IntPtr prog, byte* log);
    [LibraryImport(Lib)] internal static partial int nvrtcGetCUBINSize(IntPtr prog, out nuint size);
    [LibraryImport(Lib)] internal static partial int nvrtcGetCUBIN(IntPtr prog, byte* cubin);
    [LibraryImport(Lib)] internal static partial IntPtr nvrtcGetErrorString(int result);

    internal static void Check(int result, string call, string log = "")
    {
        if (result == 0) return;
        string text;
        try { text = Marshal.PtrToStringUTF8(nvrtcGetErrorString(result)) ?? "unknown"; }
        catch (Exception) { text = "unknown"; }
        throw new NvrtcException(call, result, text, log);
    }
}
