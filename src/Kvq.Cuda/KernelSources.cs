using System.Reflection;
using System.Text.RegularExpressions;

namespace Kvq.Cuda;

/// <summary>CUDA C++ sources embedded in an assembly (resource names "&lt;prefix&gt;.&lt;file&gt;").</summary>
public static partial class KernelSources
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

    /// <summary>The headers a source includes with <c>#include "name"</c>, directly or through other headers, each once in
    /// the order first met, read by <paramref name="read"/> (default: this assembly's embedded kernels, where the shared
    /// .cuh files live). NVRTC sees no file system: these are the (name, text) pairs it is handed.</summary>
    public static IReadOnlyList<KernelHeader> Includes(string source, Func<string, string>? read = null)
    {
        read ??= f => Read(f);
        var found = new List<KernelHeader>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        void Walk(string text, string from)
        {
            foreach (Match m in IncludeLine().Matches(text))
            {
                var name = m.Groups[1].Value;
                if (!seen.Add(name)) continue;
                string body;
                try { body = read(name); }
                catch (FileNotFoundException e) { throw new FileNotFoundException($"{from} includes \"{name}\", which is not embedded: {e.Message}", name, e); }
                found.Add(new KernelHeader(name, body));
                Walk(body, name);
            }
        }
        Walk(source, "the kernel source");
        return found;
    }

    [GeneratedRegex(@"^[ \t]*#[ \t]*include[ \t]*""([^""]+)""", RegexOptions.Multiline)]
    private static partial Regex IncludeLine();
}

/// <summary>An include file handed to NVRTC: the name the source's <c>#include</c> uses and its text.</summary>
public sealed record KernelHeader(string Name, string Text);

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

    /// <summary>Loads a module compiled from <paramref name="source"/>; <paramref name="options"/> are passed to NVRTC (e.g.
    /// -D defines). The headers it includes come from Kvq.Cuda's embedded kernels (<see cref="KernelSources.Includes"/>)
    /// and are part of the cache key, so an edited header never reuses a stale cubin.</summary>
    public CudaModule Load(string source, string name, params string[] options)
    {
        // No --use_fast_math: the encoders divide exactly like the CPU codecs (a fast division could move a value
        // across a midpoint); the attention kernels ask for fast exponentials explicitly (__expf).
        var opts = new List<string> { "-lineinfo" };
        opts.AddRange(options);
        var headers = KernelSources.Includes(source);
        var key = KernelCache.Key(source, headers, Arch, opts, _compiler);
        var cubin = _cache.GetOrCompile(key, () => NvrtcCompiler.Compile(source, name, Arch, opts, headers));
        return CudaModule.Load(_ctx, cubin, name);
    }
}
