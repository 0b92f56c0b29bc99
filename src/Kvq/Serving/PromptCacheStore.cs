using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Cache.Sessions;

namespace Kvq.Serving;

/// <summary>
/// Keeps an engine's prefix cache across restarts (issue 20: "the server's prompt cache surviving a restart"). When the
/// engine stops, the whole blocks of recently finished requests that are still cached are written as session files
/// (<see cref="KvSessionFile"/>: the compressed blocks as stored, checksummed, written atomically, bound to the model
/// and the format; no logits); when an engine starts, they are read back into its pool as cached blocks, so the first
/// request with a known prefix computes only what follows it. Files live in a folder per model and format under
/// <see cref="Directory"/>, so one directory serves any number of models and formats; a file that cannot be used
/// (another build, truncated, corrupted) is skipped and named in <see cref="LastLoad"/>, never fatal, and is removed at
/// the next save.
/// </summary>
/// <param name="directory">The root folder (created at the first save).</param>
/// <param name="identity">The model's session identity for the engine's layout (e.g.
/// <c>ModelIdentity.Of(loaded).Session</c>).</param>
/// <param name="maxPrefixes">Prefixes kept at most (the most recently used).</param>
public sealed class PromptCacheStore(string directory, Func<KvLayoutPlan, KvSessionIdentity> identity, int maxPrefixes = 64)
{
    private const string Extension = ".kvqs";

    public string Directory { get; } = directory;
    public int MaxPrefixes { get; } = maxPrefixes >= 0 ? maxPrefixes : throw new ArgumentOutOfRangeException(nameof(maxPrefixes));

    /// <summary>What the latest <see cref="Load"/> found (null before any).</summary>
    public PromptCacheLoad? LastLoad { get; private set; }

    /// <summary>What the latest <see cref="Save"/> wrote (null before any).</summary>
    public PromptCacheSave? LastSave { get; private set; }

    /// <summary>Why the latest save at an engine's stop failed (disk full, no permission), or null.</summary>
    public Exception? SaveError { get; internal set; }

    /// <summary>The folder for <paramref name="cache"/>'s model and format.</summary>
    public string FolderFor(PagedKvCache cache) => Folder(identity(cache.Plan));

    private string Folder(KvSessionIdentity id) => Path.Combine(Directory, $"{id.Model[..12]}-{id.Format[..12]}");

    /// <summary>
    /// Restores the saved prefixes into <paramref name="cache"/>'s pool as cached blocks (newest file first, while plain
    /// free blocks last: a restore never evicts another) and records them in <paramref name="recent"/>.
    /// </summary>
    internal PromptCacheLoad Load(PagedKvCache cache, RecentPrefixes recent)
    {
        var id = identity(cache.Plan);
        string folder = Folder(id);
        var skipped = new List<string>();
        var restored = new List<int[]>();
        long tokens = 0;
        int files = 0;
        if (System.IO.Directory.Exists(folder))
        {
            var pool = cache.Sequences.Pool;
            foreach (var file in new DirectoryInfo(folder).GetFiles("*" + Extension).OrderByDescending(f => f.LastWriteTimeUtc))
            {
                files++;
                KvSession session;
                try { session = KvSession.Load(file.FullName, id); }
                catch (KvSessionException e)
                {
                    skipped.Add(e.Message);
                    continue;
                }
                var run = session.Tokens.ToArray();
                if (run.Length == 0 || run.Length % cache.Config.BlockTokens != 0)
                {
                    skipped.Add($"{file.FullName}: {run.Length} tokens, not whole blocks of {cache.Config.BlockTokens}");
                    continue;
                }
                if (pool.Prefixes.CountCachedBlocks(run) * cache.Config.BlockTokens == run.Length)
                {
                    restored.Add(run);   // a longer saved prefix brought these blocks already
                    continue;
                }
                long need = cache.Plan.BlocksFor(run.Length);
                if (need > pool.FreeBlockCount - pool.CachedFreeBlockCount)
                {
                    skipped.Add($"{file.FullName}: {run.Length} tokens need {need} blocks; {pool.FreeBlockCount - pool.CachedFreeBlockCount} are free");
                    continue;
                }
                // Restored then released: its registered blocks stay in the pool as cached prefixes.
                session.Restore(cache).Dispose();
                restored.Add(run);
                tokens += run.Length;
            }
        }
        for (int i = restored.Count - 1; i >= 0; i--) recent.Add(restored[i]);
        return LastLoad = new PromptCacheLoad(folder, files, restored.Count, tokens, skipped);
    }

    /// <summary>
    /// Writes every run of <paramref name="recent"/> (newest first, at most <see cref="MaxPrefixes"/>) whose leading
    /// blocks are still cached, as far as they are cached; a run covered by one written already is skipped. Files of
    /// the folder not written this time are removed. Call it when no sequence is running.
    /// </summary>
    internal PromptCacheSave Save(PagedKvCache cache, RecentPrefixes recent)
    {
        var id = identity(cache.Plan);
        string folder = Folder(id);
        System.IO.Directory.CreateDirectory(folder);
        var prefixes = cache.Sequences.Pool.Prefixes;
        int b = cache.Config.BlockTokens;
        var written = new List<int[]>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        long tokens = 0, bytes = 0;
        foreach (var run in recent.Runs)
        {
            if (written.Count >= MaxPrefixes) break;
            int n = prefixes.CountCachedBlocks(run) * b;
            if (n == 0 || written.Exists(w => w.Length >= n && w.AsSpan(0, n).SequenceEqual(run.AsSpan(0, n)))) continue;
            // A sequence takes at most all but the last of the tokens it is given from the cache (the model must run
            // the last one): one token more than the prefix, whose value does not matter, takes the whole prefix.
            var probe = new int[n + 1];
            run.AsSpan(0, n).CopyTo(probe);
            using var seq = cache.CreateSequence(probe);
            if (seq.Length == 0) continue;
            var prefix = run[..seq.Length];
            string name = Name(prefix);
            string path = Path.Combine(folder, name);
            KvSession.Capture(seq, id, []).Save(path);
            names.Add(name);
            written.Add(prefix);
            tokens += prefix.Length;
            bytes += new FileInfo(path).Length;
        }
        int removed = 0;
        foreach (var file in System.IO.Directory.GetFiles(folder, "*" + Extension))
            if (!names.Contains(Path.GetFileName(file)))
            {
                File.Delete(file);
                removed++;
            }
        return LastSave = new PromptCacheSave(folder, written.Count, tokens, bytes, removed);
    }

    /// <summary>A file name from the tokens' SHA-256 (the same prefix always gets the same file).</summary>
    private static string Name(ReadOnlySpan<int> tokens) =>
        Convert.ToHexString(SHA256.HashData(MemoryMarshal.AsBytes(tokens)).AsSpan(0, 16)).ToLowerInvariant() + Extension;
}

/// <summary>What <see cref="PromptCacheStore"/> restored at an engine's start.</summary>
/// <param name="Files">Session files found in <paramref name="Folder"/>.</param>
/// <param name="Prefixes">Prefixes now cached from them.</param>
/// <param name="Tokens">Tokens restored into blocks.</param>
/// <param name="Skipped">Why each unused file was not used (path and reason).</param>
public sealed record PromptCacheLoad(string Folder, int Files, int Prefixes, long Tokens, IReadOnlyList<string> Skipped);

/// <summary>What <see cref="PromptCacheStore"/> wrote when an engine stopped.</summary>
/// <param name="Removed">Files of earlier runs no longer cached, deleted.</param>
public sealed record PromptCacheSave(string Folder, int Prefixes, long Tokens, long Bytes, int Removed);
