using System.Diagnostics;
using System.Text.RegularExpressions;
using Kvq.IO;

namespace Kvq.Cache.Storage;

/// <summary>
/// The folder a spill tier (<see cref="SwapSpace"/>'s files, <see cref="PrefixFileTier"/>'s blocks) keeps its files in:
/// a fresh <c>PREFIX-PID-GUID</c> under the folder it was given, with a lock file <c>PREFIX-PID-GUID.lock</c> beside it
/// that the owner holds open (exclusively: flock on Linux and macOS, a sharing lock on Windows) for as long as the folder
/// lives. The lock is made before the folder and removed after it, so a folder whose lock nobody holds was left by a
/// process that died (killed, crashed) before it could remove it: <see cref="Sweep"/> removes those at the next start.
/// </summary>
internal sealed class SpillFolder : IDisposable
{
    private const string LockSuffix = ".lock";
    private readonly FileStream _lock;
    private readonly string _lockPath;

    private SpillFolder(string path, string lockPath, FileStream held)
    {
        Path = path;
        _lockPath = lockPath;
        _lock = held;
    }

    /// <summary>The folder (made by <see cref="Create"/>).</summary>
    public string Path { get; }

    /// <summary>Makes a fresh folder <c>PREFIX-PID-GUID</c> in <paramref name="root"/> (made if missing), its lock held.</summary>
    /// <exception cref="IOException">The lock file or the folder cannot be made.</exception>
    /// <exception cref="UnauthorizedAccessException">No right to write in <paramref name="root"/>.</exception>
    public static SpillFolder Create(string root, string prefix)
    {
        Directory.CreateDirectory(root);
        var name = $"{prefix}-{Environment.ProcessId}-{Guid.NewGuid():N}";
        var path = System.IO.Path.Combine(root, name);
        var lockPath = path + LockSuffix;
        var held = new FileStream(lockPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1);
        try
        {
            Directory.CreateDirectory(path);
        }
        catch
        {
            held.Dispose();
            TryDelete(lockPath);
            throw;
        }
        return new SpillFolder(path, lockPath, held);
    }

    /// <summary>Removes the folder and everything in it (it is this tier's own), then the lock.</summary>
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        _lock.Dispose();
        TryDelete(_lockPath);
    }

    /// <summary>
    /// Removes what dead owners left in <paramref name="root"/>: only folders named <c>PREFIX-PID-GUID</c> (32 hex
    /// digits) whose lock file nobody holds, and that belong to no other live process (for a folder without a lock
    /// file, or where file locks do not work: its PID names no running process); in such a folder only the files named
    /// as the tier names them (<paramref name="ownFile"/>, and the temporary files of <see cref="AtomicFile"/> writes of
    /// those names); the folder only once it is empty, and then its lock file. Anything else (a user's file put in such a
    /// folder, a folder named otherwise) stays. Never throws for a file it cannot remove: it is skipped.
    /// </summary>
    /// <returns>Files removed (lock files not counted) and folders removed.</returns>
    public static (int Files, int Folders) Sweep(string root, string prefix, Regex ownFile)
    {
        int files = 0, folders = 0;
        if (!Directory.Exists(root)) return (0, 0);
        var folderName = new Regex($"^{Regex.Escape(prefix)}-(?<pid>[0-9]{{1,10}})-[0-9a-f]{{32}}$", RegexOptions.CultureInvariant);
        IEnumerable<string> candidates;
        try
        {
            candidates = Directory.EnumerateDirectories(root).Select(d => System.IO.Path.GetFileName(d))
                .Concat(Directory.EnumerateFiles(root, "*" + LockSuffix).Select(f => System.IO.Path.GetFileName(f)[..^LockSuffix.Length]))
                .Where(n => folderName.IsMatch(n)).Distinct().ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (0, 0);
        }
        foreach (var name in candidates)
        {
            int pid = int.TryParse(folderName.Match(name).Groups["pid"].Value, out var p) ? p : -1;
            var path = System.IO.Path.Combine(root, name);
            var lockPath = path + LockSuffix;
            FileStream? held = null;
            try
            {
                if (File.Exists(lockPath))
                {
                    try { held = new FileStream(lockPath, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1); }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }   // its owner lives
                    // Belt and braces where locks are advisory or off: another live process of that PID keeps it.
                    if (pid != Environment.ProcessId && IsRunning(pid)) continue;
                }
                else if (pid == Environment.ProcessId || IsRunning(pid))
                {
                    continue;   // no lock to ask: only a dead PID's folder goes
                }
                if (Directory.Exists(path))
                {
                    foreach (var f in Directory.EnumerateFiles(path).ToList())
                    {
                        var file = System.IO.Path.GetFileName(f);
                        if (!IsOwn(file, ownFile)) continue;
                        if (TryDelete(f)) files++;
                    }
                    if (!Directory.EnumerateFileSystemEntries(path).Any())
                    {
                        try
                        {
                            Directory.Delete(path);
                            folders++;
                        }
                        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
                    }
                }
                if (!Directory.Exists(path) && held != null)
                {
                    held.Dispose();
                    held = null;
                    TryDelete(lockPath);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Raced with its owner or cannot be read: leave it.
            }
            finally
            {
                held?.Dispose();
            }
        }
        return (files, folders);
    }

    /// <summary>A tier's file (<paramref name="ownFile"/>) or an <see cref="AtomicFile"/> temp file of one
    /// (<c>.NAME.PID.GUID.tmp</c>).</summary>
    private static bool IsOwn(string file, Regex ownFile)
    {
        if (ownFile.IsMatch(file)) return true;
        var m = AtomicTemp.Match(file);
        return m.Success && ownFile.IsMatch(m.Groups["name"].Value);
    }

    private static readonly Regex AtomicTemp = new(@"^\.(?<name>.+)\.[0-9]{1,10}\.[0-9a-f]{32}\.tmp$", RegexOptions.CultureInvariant);

    private static bool IsRunning(int pid)
    {
        if (pid <= 0) return false;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception
                                      or NotSupportedException or PlatformNotSupportedException)
        {
            return false;
        }
    }

    /// <summary>Deletes a file if it is there; an I/O or permission error only returns false (a spill file that
    /// cannot go is left for the next start's <see cref="Sweep"/>).</summary>
    internal static bool TryDelete(string path)
    {
        try
        {
            if (!File.Exists(path)) return false;
            File.Delete(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
