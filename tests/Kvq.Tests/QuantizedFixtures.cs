using System.Collections.Concurrent;
using Kvq.Formats.Gguf;
using LLama;
using LLama.Native;

namespace Kvq.Tests;

/// <summary>
/// Quantized variants of the shared fixture models, made by the real llama.cpp (LLamaSharp's llama_model_quantize)
/// and cached outside the repository, in <see cref="CacheDir"/>, across test runs.
/// </summary>
/// <remarks>
/// Usage: <c>QuantizedFixtures.Get("Q4_K_M")</c> or <c>QuantizedFixtures.Get(LLamaFtype.MOSTLY_Q4_K_M)</c> returns the path
/// of a quantized copy of books-19m.gguf (or of <c>source</c>). llama.cpp picks types per tensor (mixes for the _S/_M
/// variants) and falls back to 32-block types for rows that are not a multiple of 256 (dim 384 is not), so
/// inspect the file's tensor types rather than assuming one type.
/// The cache key covers the source's size and time stamp and the LLamaSharp version; files appear atomically (written
/// under a temporary name, then renamed), so concurrent test processes can share the folder.
/// Set KVQ_FIXTURE_CACHE to move the cache.
/// </remarks>
public static class QuantizedFixtures
{
    /// <summary>The variants the quantization tests cover, by llama.cpp's names (LLamaFtype without MOSTLY_).</summary>
    public static readonly IReadOnlyList<string> Names =
        ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS"];

    private static readonly ConcurrentDictionary<string, Lazy<string>> Made = new(StringComparer.Ordinal);
    private static readonly ConcurrentQueue<string> Log = new();
    private static readonly Lazy<bool> Loaded = new(LoadLlama);

    public static string CacheDir
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("KVQ_FIXTURE_CACHE");
            return string.IsNullOrEmpty(env) ? Path.Combine(Path.GetTempPath(), "kvq-fixtures") : env;
        }
    }

    /// <summary>"Q4_K_M", "MOSTLY_Q4_K_M" (any case) to llama.cpp's file type.</summary>
    public static LLamaFtype ParseName(string name)
    {
        var n = name.Trim().ToUpperInvariant();
        if (!n.StartsWith("MOSTLY_", StringComparison.Ordinal) && n != "ALL_F32") n = "MOSTLY_" + n;
        return Enum.TryParse<LLamaFtype>(n, ignoreCase: false, out var ft) && Enum.IsDefined(ft)
            ? ft : throw new ArgumentException($"unknown llama.cpp file type '{name}'", nameof(name));
    }

    public static string Get(string name, string? source = null) => Get(ParseName(name), source);

    /// <summary>Path of <paramref name="source"/> (default books-19m.gguf) quantized to <paramref name="ftype"/>.</summary>
    public static string Get(LLamaFtype ftype, string? source = null)
    {
        source = Path.GetFullPath(source ?? Fixtures.BooksGguf);
        var info = new FileInfo(source);
        if (!info.Exists) throw new FileNotFoundException($"fixture not found: {source}", source);
        string version = typeof(LLamaQuantizer).Assembly.GetName().Version?.ToString() ?? "0";
        string key = $"{info.Length}-{info.LastWriteTimeUtc.Ticks}-{version}";
        string hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(key)))[..12];
        string name = ftype.ToString().Replace("MOSTLY_", "", StringComparison.Ordinal);
        string path = Path.Combine(CacheDir, $"{Path.GetFileNameWithoutExtension(source)}.{name}.{hash}.gguf");
        return Made.GetOrAdd(path, p => new Lazy<string>(() => Make(source, p, ftype))).Value;
    }

    /// <summary>llama.cpp's recent warnings and errors (for the message of a failed load).</summary>
    public static string RecentLog => string.Join("", Log);

    /// <summary>Loads llama.cpp once, routing its warnings and errors into a buffer that failures report.</summary>
    public static void EnsureLlamaLoaded() => _ = Loaded.Value;

    /// <summary>Full path of a native library that llama.cpp loaded into this process (e.g. "libggml-base"), or null.</summary>
    public static string? LoadedNativeLibrary(string stem)
    {
        EnsureLlamaLoaded();
        if (!OperatingSystem.IsLinux()) return null;
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            var file = line[slash..];
            var fn = Path.GetFileName(file);
            if (fn.StartsWith(stem + ".", StringComparison.Ordinal) && fn.Contains(".so", StringComparison.Ordinal)) return file;
        }
        return null;
    }

    private static bool LoadLlama()
    {
        // No NativeLibraryConfig here: LLamaSharp refuses configuration once anything has loaded the library, so it
        // would depend on which test runs first. llama_log_set works either way (the peer sets its own, also quiet).
        NativeApi.llama_empty_call();
        // Keep warnings and errors (quietly) for the message of a failed quantization.
        NativeLogConfig.llama_log_set((level, msg) =>
        {
            if (level < LLamaLogLevel.Warning) return;
            Log.Enqueue(msg);
            while (Log.Count > 200) Log.TryDequeue(out _);
        });
        return true;
    }

    private static string Make(string source, string path, LLamaFtype ftype)
    {
        if (File.Exists(path) && IsReadable(path)) return path;
        EnsureLlamaLoaded();
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            // quantizeOutputTensor: true, as the llama-quantize tool does by default.
            bool ok = LLamaQuantizer.Quantize(source, tmp, ftype, Math.Max(1, Environment.ProcessorCount), true, true);
            if (!ok || !IsReadable(tmp))
                throw new InvalidOperationException(
                    $"llama.cpp could not quantize {source} to {ftype}: {string.Join("", Log)}");
            File.Move(tmp, path, overwrite: true);
            return path;
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private static bool IsReadable(string path)
    {
        try
        {
            using var g = GgufFile.Open(path);
            return g.Tensors.Count > 0;
        }
        catch (Kvq.Formats.ModelFormatException)
        {
            return false;
        }
    }
}
