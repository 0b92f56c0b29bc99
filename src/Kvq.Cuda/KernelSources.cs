using System.Reflection;

namespace Kvq.Cuda;

/// <summary>CUDA C++ sources embedded in an assembly (resource names "&lt;prefix&gt;.&lt;file&gt;").</summary>
public static class KernelSources
{
    public const string Prefix = "Kvq.Cuda.Kernels.";

    /// <summary>The text of an embedded kernel file, e.g. "decode_attention.cu".</summary>
    public static string Read(string file, Assembly? assembly = null, string prefix = Prefix)
    {
        var asm = assembly ?? typeof(KernelSources).Assembly;
        using var s = asm.GetManifestResourceStream(prefix + file)
            ?? throw new FileNotFoundException($"no embedded kernel '{file}' in {asm.GetName().Name} (resources: {string.Join(", ", Names(asm))})");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    public static IEnumerable<string> Names(Assembly? assembly = null) =>
        (assembly ?? typeof(KernelSources).Assembly).GetManifestResourceNames();
}

/// <summary>Compiles embedded sources for a context's device through the cache and loads them.</summary>
public sealed class KernelLoader
{
    private readonly CudaContext _ctx;
    private readonly KernelCache _cache;
    private readonly string _compiler;
    public string Arch { get; }

    public KernelLoader(CudaContext ctx, KernelCache? cache = null, string? arch = null)
    {
        _ctx = ctx;
        _cache = cache ?? new KernelCache();
        var (maj, min) = NvrtcCompiler.Version();
        _compiler = $"nvrtc {maj}.{min}";
        Arch = arch ?? ctx.Device.Arch;
    }

    public KernelCache Cache => _cache;

    /// <summary>Loads a module compiled from <paramref name="source"/>; <paramref name="options"/> are passed to NVRTC (e.g. -D defines).</summary>
    public CudaModule Load(string source, string name, params string[] options)
    {
        // No --use_fast_math: the encoders divide exactly like the CPU codecs (a fast division could move a value
        // across a midpoint); the attention kernels ask for fast exponentials explicitly (__expf).
        var opts = new List<string> { "-lineinfo" };
        opts.AddRange(options);
        var key = KernelCache.Key(source, Arch, opts, _compiler);
        var cubin = _cache.GetOrCompile(key, () => NvrtcCompiler.Compile(source, name, Arch, opts));
        return CudaModule.Load(_ctx, cubin, name);
    }
}
