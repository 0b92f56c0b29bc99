using System.Text;
using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>Compiles CUDA C++ source to a cubin for one architecture with NVRTC.</summary>
public static unsafe class NvrtcCompiler
{
    /// <summary>NVRTC's version, e.g. (13, 0); throws <see cref="CudaUnavailableException"/> without NVRTC.</summary>
    public static (int Major, int Minor) Version()
    {
        NativeLibraries.Require(NativeLibraries.Nvrtc);
        Nvrtc.Check(Nvrtc.nvrtcVersion(out int major, out int minor), "nvrtcVersion");
        return (major, minor);
    }

    /// <summary>Compiles <paramref name="source"/> for <paramref name="arch"/> (e.g. sm_90, sm_90a) and returns the
    /// cubin. A compile error becomes an <see cref="NvrtcException"/> carrying the compiler's log.</summary>
    /// <param name="headers">the files the source may #include (NVRTC reads no file system): name and text each.</param>
    public static byte[] Compile(string source, string name, string arch, IReadOnlyList<string> options, IReadOnlyList<KernelHeader>? headers = null)
    {
        NativeLibraries.Require(NativeLibraries.Nvrtc);
        var src = Z(source);
        var nm = Z(name);
        IntPtr prog;
        headers ??= [];
        var texts = headers.Select(h => Z(h.Text)).ToArray();
        var names = headers.Select(h => Z(h.Name)).ToArray();
        var pins = texts.Concat(names).Select(b => System.Runtime.InteropServices.GCHandle.Alloc(b, System.Runtime.InteropServices.GCHandleType.Pinned)).ToArray();
        try
        {
            var hp = stackalloc byte*[Math.Max(1, texts.Length)];
            var np = stackalloc byte*[Math.Max(1, names.Length)];
            for (int i = 0; i < texts.Length; i++)
            {
                hp[i] = (byte*)pins[i].AddrOfPinnedObject();
                np[i] = (byte*)pins[texts.Length + i].AddrOfPinnedObject();
            }
            fixed (byte* s = src, n = nm)
                Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out prog, s, n, texts.Length, texts.Length > 0 ? hp : null, texts.Length > 0 ? np : null),
                    $"nvrtcCreateProgram({name}, {texts.Length} headers)");
        }
        finally
        {
            foreach (var h in pins) h.Free();   // nvrtcCreateProgram copies the headers
        }
        try
        {
            var all = new List<string> { $"--gpu-architecture={arch}", "--std=c++17" };
            all.AddRange(options);
            var bufs = all.Select(Z).ToArray();
            var handles = bufs.Select(b => System.Runtime.InteropServices.GCHandle.Alloc(b, System.Runtime.InteropServices.GCHandleType.Pinned)).ToArray();
            try
            {
                var ptrs = stackalloc byte*[bufs.Length];
                for (int i = 0; i < bufs.Length; i++) ptrs[i] = (byte*)handles[i].AddrOfPinnedObject();
                int r = Nvrtc.nvrtcCompileProgram(prog, bufs.Length, ptrs);
                Nvrtc.Check(r, $"nvrtcCompileProgram({name}, {string.Join(' ', all)})", r != 0 ? Log(prog) : "");
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            Nvrtc.Check(Nvrtc.nvrtcGetCUBINSize(prog, out nuint size), $"nvrtcGetCUBINSize({name})");
            var cubin = new byte[(int)size];
            fixed (byte* c = cubin) Nvrtc.Check(Nvrtc.nvrtcGetCUBIN(prog, c), $"nvrtcGetCUBIN({name})");
            return cubin;
        }
        finally
        {
            Nvrtc.nvrtcDestroyProgram(ref prog);
        }
    }

    private static string Log(IntPtr prog)
    {
        if (Nvrtc.nvrtcGetProgramLogSize(prog, out nuint size) != 0 || size <= 1) return "";
        var buf = new byte[(int)size];
        fixed (byte* b = buf) if (Nvrtc.nvrtcGetProgramLog(prog, b) != 0) return "";
        return Encoding.UTF8.GetString(buf, 0, buf.Length - 1);
    }

    private static byte[] Z(string s) => Encoding.UTF8.GetBytes(s + "\0");
}
