using System.Security.Cryptography;
using System.Text;

namespace Kvq.Cuda;

/// <summary>
/// Cubins on disk, keyed by SHA-256 of (source and its include headers, options, architecture, NVRTC version), so a changed kernel, flag or
/// compiler never reuses a stale binary. Folder: KVQ_CUBIN_CACHE, else $XDG_CACHE_HOME/kvq/cubin, else
/// ~/.cache/kvq/cubin. Writes are atomic (temp file + rename) so concurrent processes never read half a file;
/// an unreadable cache only costs a compile.
/// </summary>
public sealed class KernelCache
{
    public string Folder { get; }
    public int Hits { get; private set; }
    public int Compiles { get; private set; }

    public KernelCache(string? folder = null) => Folder = folder ?? DefaultFolder();

    public static string DefaultFolder()
    {
        var env = Environment.GetEnvironmentVariable("KVQ_CUBIN_CACHE");
        if (!string.IsNullOrWhiteSpace(env)) return env;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrWhiteSpace(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "kvq", "cubin");
    }

    public static string Key(string source, string arch, IReadOnlyList<string> options, string compilerVersion) =>
        Key(source, [], arch, options, compilerVersion);

    /// <summary>The key of a source compiled with include headers: each header's name and text count like the source's
    /// (no headers: the same key as <see cref="Key(string, string, IReadOnlyList{string}, string)"/>).</summary>
    public static string Key(string source, IReadOnlyList<KernelHeader> headers, string arch, IReadOnlyList<string> options, string compilerVersion)
    {
        var text = new StringBuilder($"{compilerVersion}\n{arch}\n{string.Join('\u0001', options)}\n{source}");
        foreach (var h in headers) text.Append('\u0002').Append(h.Name).Append('\n').Append(h.Text);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>The cached cubin for this key, or the result of <paramref name="compile"/>, stored for next time.</summary>
    public byte[] GetOrCompile(string key, Func<byte[]> compile)
    {
        var path = Path.Combine(Folder, key + ".cubin");
        try
        {
            if (File.Exists(path))
            {
                Hits++;
                return File.ReadAllBytes(path);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        var cubin = compile();
        Compiles++;
        try
        {
            Directory.CreateDirectory(Folder);
            var tmp = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllBytes(tmp, cubin);
            File.Move(tmp, path, overwrite: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return cubin;
    }
}
