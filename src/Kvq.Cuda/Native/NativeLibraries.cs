using System.Reflection;
using System.Runtime.InteropServices;

namespace Kvq.Cuda.Native;

/// <summary>
/// Maps the logical library names of the P/Invoke declarations ("cuda", "nvrtc", "cublas") to the shared objects
/// present on this machine. The driver keeps a stable soname (libcuda.so.1); NVRTC and cuBLAS carry the toolkit's
/// major version in theirs (libnvrtc.so.13 with CUDA 13), so several are probed, in the toolkit folders too, and
/// KVQ_NVRTC / KVQ_CUBLAS / KVQ_NCCL name an exact file when set.
/// </summary>
internal static class NativeLibraries
{
    public const string Cuda = "cuda";
    public const string Nvrtc = "nvrtc";
    public const string Cublas = "cublas";
    public const string Nccl = "nccl";

    private static readonly string[] Folders =
        ["", "/usr/local/cuda/lib64/", "/usr/local/cuda/targets/x86_64-linux/lib/", "/usr/lib/x86_64-linux-gnu/"];
    private static int _installed;
    private static readonly Dictionary<string, IntPtr> Loaded = new();
    private static readonly Dictionary<string, string> Failures = new();

    public static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref _installed, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        lock (Loaded)
        {
            if (Loaded.TryGetValue(name, out var h)) return h;
            var candidates = Candidates(name);
            if (candidates.Length == 0) return IntPtr.Zero;
            foreach (var c in candidates)
                if (NativeLibrary.TryLoad(c, out h))
                {
                    Loaded[name] = h;
                    return h;
                }
            Failures[name] = string.Join(", ", candidates);
            return IntPtr.Zero;
        }
    }

    /// <summary>Loads a library now (so that a missing one becomes a typed error instead of a DllNotFoundException
    /// at the first call) and returns the file that was found.</summary>
    public static void Require(string name)
    {
        EnsureResolver();
        if (Resolve(name, typeof(NativeLibraries).Assembly, null) == IntPtr.Zero)
            throw new CudaUnavailableException($"no {name} library found (tried {string.Join(", ", Candidates(name))})");
    }

    private static string[] Candidates(string name)
    {
        string[] files = name switch
        {
            Cuda => ["libcuda.so.1", "libcuda.so"],
            Nvrtc => Env("KVQ_NVRTC", ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]),
            Cublas => Env("KVQ_CUBLAS", ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]),
            // NCCL ships with PyTorch's wheels (site-packages/nvidia/nccl/lib): KVQ_NCCL names that file, or the loader
            // path finds it (dev/gpu/device-gpu-tests.sh sets both).
            Nccl => Env("KVQ_NCCL", ["libnccl.so.2", "libnccl.so"]),
            _ => [],
        };
        if (name == Cuda) return files;   // the driver lives where the loader finds it, never in a toolkit folder
        return files.SelectMany(f => f.Contains('/') ? [f] : Folders.Select(d => d + f)).ToArray();
    }

    private static string[] Env(string variable, string[] fallback)
    {
        var v = Environment.GetEnvironmentVariable(variable);
        return string.IsNullOrWhiteSpace(v) ? fallback : [v];
    }
}
