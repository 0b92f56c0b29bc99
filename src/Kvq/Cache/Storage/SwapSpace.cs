using System.Text.RegularExpressions;
using Kvq.Cache.Layout;
using Kvq.Cache.Sessions;
using Kvq.IO;

namespace Kvq.Cache.Storage;

/// <summary>Where a swapped-out sequence's KV is kept.</summary>
public enum SwapTier
{
    /// <summary>Host memory (the <see cref="SwappedKv"/> itself).</summary>
    Host,
    /// <summary>A file in the swap space's folder (a <see cref="KvSessionFile"/> without logits).</summary>
    File,
}

/// <summary>A swapped-out sequence's place in a <see cref="SwapSpace"/>: which tier, its tokens, its bytes there.</summary>
public sealed class SwapTicket
{
    internal SwapTicket(SwapTier tier, int length, long bytes, SwappedKv? kv, string? path)
    {
        Tier = tier;
        Length = length;
        Bytes = bytes;
        Kv = kv;
        Path = path;
    }

    public SwapTier Tier { get; }
    /// <summary>Tokens the sequence held (its blocks on return).</summary>
    public int Length { get; }
    /// <summary>Bytes it takes in its tier: <see cref="SwappedKv.Bytes"/> in host memory, the file's length on disk.</summary>
    public long Bytes { get; }
    internal SwappedKv? Kv { get; }
    internal string? Path { get; }
}

/// <summary>
/// The tiers behind a block pool for sequences preempted by swapping (issue 20 item 6): host memory under
/// <see cref="HostBudgetBytes"/>, then, when that is full, a folder of files under <see cref="FileBudgetBytes"/>. A
/// swapped sequence's compressed blocks, staging and sink copies (<see cref="SwappedKv"/>) are kept as they are in host
/// memory, or written as a session file (<see cref="KvSessionFile"/>: atomic, SHA-256, bound to this swap space's own
/// identity and the cache's layout) and read back, checked, on return. When neither tier has room (or the disk refuses
/// the write), <see cref="TryPut"/> says so and the caller recomputes instead; a file that cannot be read back is a
/// refusal too (<see cref="TryTake"/>), never a crash. Bytes are counted exactly per tier (host: what the arrays hold;
/// file: the files' lengths). The folder (a fresh subfolder of the one given, <see cref="SpillFolder"/>) and every file
/// in it are removed on <see cref="Dispose"/>; a file is removed as soon as its sequence is taken back or dropped. The
/// folder given is probed for writing when the swap space is made, and the folders that killed processes left there
/// are swept (<see cref="SweptFiles"/>). Not thread-safe (the engine thread owns it).
/// </summary>
public sealed class SwapSpace : IDisposable
{
    private readonly KvSessionIdentity _identity;
    private readonly string? _root;
    private readonly HashSet<SwapTicket> _held = [];
    private SpillFolder? _folder;
    private long _nextFile;

    /// <summary>The file tier's folders under the folder given: <c>kvq-swap-PID-GUID</c>.</summary>
    internal const string FolderPrefix = "kvq-swap";
    /// <summary>The files in one: <c>seq-N.kvqswap</c>.</summary>
    internal static readonly Regex FileName = new(@"^seq-[0-9]{1,19}\.kvqswap$", RegexOptions.CultureInvariant);

    /// <param name="plan">The cache's layout: spilled files are checked against it when read back.</param>
    /// <param name="hostBudgetBytes">Host bytes for swapped sequences (0: none, every swap goes to the file tier).</param>
    /// <param name="fileDirectory">Where the file tier's folder is made (null: no file tier).</param>
    /// <param name="fileBudgetBytes">Bytes the file tier may hold on disk (needs <paramref name="fileDirectory"/>).</param>
    /// <exception cref="ArgumentOutOfRangeException">A negative budget, a file budget without a folder, or no tier at all.</exception>
    /// <exception cref="FileWriteException">The file tier's folder cannot take files (a file, under a file, no right to
    /// write): said now, not at the first swap.</exception>
    public SwapSpace(KvLayoutPlan plan, long hostBudgetBytes, string? fileDirectory = null, long fileBudgetBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (hostBudgetBytes < 0) throw new ArgumentOutOfRangeException(nameof(hostBudgetBytes), $"swap host budget must be >= 0 bytes (got {hostBudgetBytes})");
        if (fileBudgetBytes < 0) throw new ArgumentOutOfRangeException(nameof(fileBudgetBytes), $"swap file budget must be >= 0 bytes (got {fileBudgetBytes})");
        if (fileBudgetBytes > 0 && fileDirectory == null)
            throw new ArgumentOutOfRangeException(nameof(fileDirectory), "a swap file budget needs a folder for the files");
        if (hostBudgetBytes == 0 && fileBudgetBytes == 0)
            throw new ArgumentOutOfRangeException(nameof(hostBudgetBytes), "a swap space needs a host or a file budget above 0");
        HostBudgetBytes = hostBudgetBytes;
        FileBudgetBytes = fileDirectory == null ? 0 : fileBudgetBytes;
        _root = FileBudgetBytes > 0 ? fileDirectory : null;
        if (_root != null)
        {
            AtomicFile.CheckWritableFolder(_root);
            (SweptFiles, _) = SpillFolder.Sweep(_root, FolderPrefix, FileName);
        }
        // Bound to this instance: a file is read back only by the swap space that wrote it.
        _identity = KvSessionIdentity.For("swap-" + Guid.NewGuid().ToString("N"), "this engine's swap space", plan);
    }

    public long HostBudgetBytes { get; }
    public long FileBudgetBytes { get; }
    /// <summary>The file tier's folder once a file was written (removed on <see cref="Dispose"/>); null before.</summary>
    public string? Folder => _folder?.Path;
    /// <summary>Swap files that processes which died (killed, crashed) left in the folder given, removed when this swap
    /// space was made (<see cref="SpillFolder.Sweep"/>).</summary>
    public int SweptFiles { get; }

    /// <summary>Bytes held now in host memory (the swapped arrays) and in files (their lengths on disk).</summary>
    public long HostBytes { get; private set; }
    public long FileBytes { get; private set; }
    public long PeakHostBytes { get; private set; }
    public long PeakFileBytes { get; private set; }
    public int HostCount { get; private set; }
    public int FileCount { get; private set; }
    /// <summary>Sequences put in host memory, written to files, and refused (no room in either tier, or the write failed).</summary>
    public long ToHost { get; private set; }
    public long ToFile { get; private set; }
    public long Refused { get; private set; }
    /// <summary>Bytes of the sequences put in host memory and written to files (the files' lengths), over the swap
    /// space's life.</summary>
    public long ToHostBytes { get; private set; }
    public long ToFileBytes { get; private set; }
    /// <summary>Sequences taken back (from host memory plus from files), and those whose file could not be read back
    /// (the caller recomputes them).</summary>
    public long Restored => FromHost + FromFile;
    public long Unreadable { get; private set; }
    /// <summary>Sequences taken back from host memory and from files, and their bytes there, over the swap space's life.</summary>
    public long FromHost { get; private set; }
    public long FromFile { get; private set; }
    public long FromHostBytes { get; private set; }
    public long FromFileBytes { get; private set; }

    /// <summary>Whether a sequence of <paramref name="bytes"/> (<see cref="PagedKvSequence.SnapshotBytes"/>) fits a tier
    /// now: host memory, else the file budget (a file holds at least the arrays' bytes).</summary>
    public bool HasRoomFor(long bytes) =>
        HostBytes + bytes <= HostBudgetBytes || (FileBudgetBytes > 0 && FileBytes + bytes <= FileBudgetBytes);

    /// <summary>Swaps <paramref name="sequence"/> out if a tier has room for it: the room is checked before the host
    /// copy is made (<see cref="PagedKvSequence.SnapshotBytes"/>), so a sequence no tier can keep costs no copy. Null
    /// (counted in <see cref="Refused"/>) when it fits no tier, its copy finds no host memory, or its file cannot be
    /// written; the sequence is left as it was either way (the caller releases it).</summary>
    /// <exception cref="KvSpecException">The sequence cannot be swapped (a token policy, sliding-window rings).</exception>
    public SwapTicket? TryPut(PagedKvSequence sequence)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!HasRoomFor(sequence.SnapshotBytes)) return Refuse(null);
        SwappedKv copy;
        try { copy = sequence.Snapshot(); }
        catch (OutOfMemoryException e) { return Refuse(e); }
        return TryPut(copy);
    }

    /// <summary>Why the latest refusal or unreadable file happened (null if none).</summary>
    public Exception? LastError { get; private set; }

    /// <summary>Keeps <paramref name="kv"/>: in host memory if it fits the host budget, else in a file if it fits the
    /// file budget. Null when it fits neither or the file could not be written (the caller recomputes).</summary>
    public SwapTicket? TryPut(SwappedKv kv)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long bytes = kv.Bytes;
        if (HostBytes + bytes <= HostBudgetBytes)
        {
            var t = new SwapTicket(SwapTier.Host, kv.Length, bytes, kv, null);
            HostBytes += bytes;
            HostCount++;
            PeakHostBytes = Math.Max(PeakHostBytes, HostBytes);
            ToHost++;
            ToHostBytes += bytes;
            _held.Add(t);
            return t;
        }
        // A file holds at least the arrays' bytes: skip the write when even that passes the budget.
        if (FileBudgetBytes == 0 || FileBytes + bytes > FileBudgetBytes) return Refuse(null);
        string? path = null;
        long size;
        try
        {
            path = Path.Combine((_folder ??= SpillFolder.Create(_root!, FolderPrefix)).Path, $"seq-{_nextFile++}.kvqswap");
            KvSessionFile.Write(path, new KvSession(_identity, kv, []));
            size = new FileInfo(path).Length;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or KvSessionException)
        {
            if (path != null) SpillFolder.TryDelete(path);
            return Refuse(e);
        }
        if (FileBytes + size > FileBudgetBytes)
        {
            SpillFolder.TryDelete(path);
            return Refuse(null);
        }
        var ticket = new SwapTicket(SwapTier.File, kv.Length, size, null, path);
        FileBytes += size;
        FileCount++;
        PeakFileBytes = Math.Max(PeakFileBytes, FileBytes);
        ToFile++;
        ToFileBytes += size;
        _held.Add(ticket);
        return ticket;
    }

    /// <summary>Takes a sequence back out (its file read, checked and removed). Null when its file cannot be read back
    /// (removed, corrupted, unreadable: <see cref="LastError"/> says why); the ticket is spent either way.</summary>
    /// <exception cref="InvalidOperationException">The ticket is not held here (taken or dropped already).</exception>
    public SwappedKv? TryTake(SwapTicket ticket)
    {
        Forget(ticket);
        if (ticket.Tier == SwapTier.Host)
        {
            FromHost++;
            FromHostBytes += ticket.Bytes;
            return ticket.Kv;
        }
        try
        {
            var kv = KvSessionFile.Read(ticket.Path!, _identity).Kv;
            FromFile++;
            FromFileBytes += ticket.Bytes;
            return kv;
        }
        catch (Exception e) when (e is KvSessionException or IOException or UnauthorizedAccessException)
        {
            Unreadable++;
            LastError = e;
            return null;
        }
        finally
        {
            SpillFolder.TryDelete(ticket.Path!);
        }
    }

    /// <summary>Lets a swapped sequence go (its request ended while swapped out): its bytes, and its file, are freed.</summary>
    public void Drop(SwapTicket ticket)
    {
        Forget(ticket);
        if (ticket.Path != null) SpillFolder.TryDelete(ticket.Path);
    }

    private void Forget(SwapTicket ticket)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_held.Remove(ticket)) throw new InvalidOperationException("this swap ticket is not held here (taken or dropped already)");
        if (ticket.Tier == SwapTier.Host)
        {
            HostBytes -= ticket.Bytes;
            HostCount--;
        }
        else
        {
            FileBytes -= ticket.Bytes;
            FileCount--;
        }
    }

    private SwapTicket? Refuse(Exception? e)
    {
        Refused++;
        if (e != null) LastError = e;
        return null;
    }

    private bool _disposed;

    /// <summary>Drops everything held and removes the file tier's folder.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _held.Clear();
        HostBytes = FileBytes = 0;
        HostCount = FileCount = 0;
        _folder?.Dispose();
    }
}
