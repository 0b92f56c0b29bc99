using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Kvq.Cache.Layout;
using Kvq.Cache.Paging;
using Kvq.IO;

namespace Kvq.Cache.Storage;

/// <summary>
/// The disk tier behind <see cref="HostPrefixTier"/> (issue 20 item 6: "the prefix cache can keep cold prefixes ...
/// on disk"): a cached prefix block that host memory has no room for is written to a file of its own under a fresh
/// folder, and a later prompt that reaches it reads it back (checked) instead of running the model over it. Least
/// recently stored first out when <see cref="BudgetBytes"/> would be passed; <see cref="Bytes"/> is the files' exact
/// length on disk. A file that cannot be written or read back (disk full, removed, corrupted) is a miss, never an
/// error: the prompt recomputes the block. Files are written atomically and removed when taken back, dropped, or at
/// <see cref="Dispose"/> (the folder too: a <see cref="SpillFolder"/>). The folder given is probed for writing when the
/// tier is made, and the folders that killed processes left there are swept (<see cref="SweptFiles"/>).
/// <para>File format, version 1 (little-endian): "KVQPBLK\0", u32 version, i64 body bytes; body: u64 hash low, u64 hash
/// high, i32 layers, per layer i32 n + key bytes[n], i32 n + value bytes[n] (as <see cref="BlockArena.CopyOut"/> wrote
/// one block), u8 sinks, if 1: i32 n + f16 key sinks[n], i32 n + f16 value sinks[n]; then 32 bytes SHA-256 of all
/// that precedes.</para>
/// </summary>
public sealed class PrefixFileTier : IDisposable
{
    public const int Version = 1;
    private static readonly byte[] Magic = "KVQPBLK\0"u8.ToArray();
    private const int HeaderBytes = 8 + 4 + 8;

    private readonly KvLayoutPlan _plan;
    private readonly string _root;
    private readonly Dictionary<BlockHash, LinkedListNode<Stored>> _byHash = new();
    private readonly LinkedList<Stored> _lru = new();   // newest first
    private SpillFolder? _folder;
    private long _nextFile;

    /// <summary>The tier's folders under the folder given: <c>kvq-prefix-PID-GUID</c>.</summary>
    internal const string FolderPrefix = "kvq-prefix";
    /// <summary>The files in one: <c>block-N.kvqblk</c>.</summary>
    internal static readonly Regex FileName = new(@"^block-[0-9]{1,19}\.kvqblk$", RegexOptions.CultureInvariant);
    private bool _disposed;

    private sealed record Stored(BlockHash Hash, string Path, long Bytes, bool HasSinks);

    /// <param name="plan">The cache's layout (block bytes are checked against it when read back).</param>
    /// <param name="directory">Where the tier's own folder is made.</param>
    /// <param name="budgetBytes">Bytes the files may take on disk.</param>
    /// <exception cref="FileWriteException">The folder cannot take files (a file, under a file, no right to write).</exception>
    public PrefixFileTier(KvLayoutPlan plan, string directory, long budgetBytes)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        if (budgetBytes <= 0) throw new ArgumentOutOfRangeException(nameof(budgetBytes), $"the prefix file tier's budget must be above 0 bytes (got {budgetBytes})");
        _plan = plan;
        _root = directory;
        BudgetBytes = budgetBytes;
        AtomicFile.CheckWritableFolder(directory);
        (SweptFiles, _) = SpillFolder.Sweep(directory, FolderPrefix, FileName);
    }

    public long BudgetBytes { get; }
    /// <summary>Bytes of the files held now.</summary>
    public long Bytes { get; private set; }
    public int Count => _byHash.Count;
    /// <summary>Blocks written, taken back by a prompt, dropped for room (or too large), and files that could not be
    /// written or read back.</summary>
    public long Written { get; private set; }
    public long Hits { get; private set; }
    public long Dropped { get; private set; }
    public long Failed { get; private set; }
    /// <summary>Why the latest write or read failed (null if none did).</summary>
    public Exception? LastError { get; private set; }
    /// <summary>The tier's folder once a file was written (removed on <see cref="Dispose"/>); null before.</summary>
    public string? Folder => _folder?.Path;
    /// <summary>Block files that processes which died (killed, crashed) left in the folder given, removed when this
    /// tier was made.</summary>
    public int SweptFiles { get; }

    internal void Put(HostPrefixTier.Entry e)
    {
        if (_disposed) return;
        Remove(e.Hash);
        var body = Body(e);
        long size = HeaderBytes + body.Length + SHA256.HashSizeInBytes;
        if (size > BudgetBytes)
        {
            Dropped++;
            return;
        }
        while (Bytes + size > BudgetBytes)
        {
            Remove(_lru.Last!.Value.Hash);
            Dropped++;
        }
        try
        {
            var path = Path.Combine((_folder ??= SpillFolder.Create(_root, FolderPrefix)).Path, $"block-{_nextFile++}.kvqblk");
            AtomicFile.Write(path, f =>
            {
                var head = new byte[HeaderBytes];
                Magic.CopyTo(head, 0);
                BinaryPrimitives.WriteUInt32LittleEndian(head.AsSpan(8), Version);
                BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(12), body.Length);
                using var hashed = new HashingWriteStream(f);
                hashed.Write(head);
                hashed.Write(body);
                f.Write(hashed.HashAndReset());
            }, flushToDisk: false);
            _byHash[e.Hash] = _lru.AddFirst(new Stored(e.Hash, path, size, e.Sinks != null));
        }
        catch (Exception x) when (x is IOException or UnauthorizedAccessException)
        {
            Failed++;
            LastError = x;
            return;
        }
        Bytes += size;
        Written++;
    }

    /// <summary>Reads the block back and removes its file. With <paramref name="needsSinks"/> (a first block under sink
    /// tokens) a file stored without its sink copies is a miss and stays. A file that cannot be read or fails its
    /// checks is a miss too (and is removed).</summary>
    internal bool TryTake(BlockHash hash, bool needsSinks, out HostPrefixTier.Entry entry)
    {
        entry = null!;
        if (_disposed || !_byHash.TryGetValue(hash, out var node) || (needsSinks && !node.Value.HasSinks)) return false;
        try
        {
            entry = Read(node.Value.Path, hash);
            Hits++;
            return true;
        }
        catch (Exception x) when (x is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            Failed++;
            LastError = x;
            return false;
        }
        finally
        {
            Remove(hash);   // and its file: taken back into the pool, or unusable
        }
    }

    private static byte[] Body(HostPrefixTier.Entry e)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(e.Hash.Low);
            w.Write(e.Hash.High);
            w.Write(e.Keys.Length);
            for (int l = 0; l < e.Keys.Length; l++)
            {
                w.Write(e.Keys[l].Length);
                w.Write(e.Keys[l]);
                w.Write(e.Values[l].Length);
                w.Write(e.Values[l]);
            }
            w.Write((byte)(e.Sinks != null ? 1 : 0));
            if (e.Sinks is { } s)
            {
                w.Write(s.Keys.Length);
                w.Write(MemoryMarshal.AsBytes(s.Keys.AsSpan()));
                w.Write(s.Values.Length);
                w.Write(MemoryMarshal.AsBytes(s.Values.AsSpan()));
            }
        }
        return ms.ToArray();
    }

    /// <summary>The entry in <paramref name="path"/>, checked: length, magic, version, SHA-256, hash, layer count and
    /// each layer's block bytes against the plan.</summary>
    /// <exception cref="InvalidDataException">Any check failed (the message names the file and the check).</exception>
    private HostPrefixTier.Entry Read(string path, BlockHash hash)
    {
        var all = File.ReadAllBytes(path);
        InvalidDataException Bad(string what) => new($"prefix block file {path}: {what}");
        if (all.Length < HeaderBytes + SHA256.HashSizeInBytes || !all.AsSpan(0, 8).SequenceEqual(Magic)) throw Bad($"not a prefix block file ({all.Length} bytes)");
        if (BinaryPrimitives.ReadUInt32LittleEndian(all.AsSpan(8)) != Version) throw Bad("unsupported version");
        long body = BinaryPrimitives.ReadInt64LittleEndian(all.AsSpan(12));
        if (body < 0 || HeaderBytes + body + SHA256.HashSizeInBytes != all.Length) throw Bad($"{all.Length} bytes, the header says {HeaderBytes + body + SHA256.HashSizeInBytes}");
        int content = (int)(HeaderBytes + body);
        if (!SHA256.HashData(all.AsSpan(0, content)).AsSpan().SequenceEqual(all.AsSpan(content))) throw Bad("checksum mismatch (the file is corrupted)");
        int at = HeaderBytes;
        int Int()
        {
            if (at + 4 > content) throw Bad($"ends early at offset {at}");
            int v = BinaryPrimitives.ReadInt32LittleEndian(all.AsSpan(at));
            at += 4;
            return v;
        }
        byte[] Take(int n, string what)
        {
            if (n < 0 || at + (long)n > content) throw Bad($"{what}: {n} bytes at offset {at} do not fit");
            var a = all.AsSpan(at, n).ToArray();
            at += n;
            return a;
        }
        var stored = new BlockHash(BinaryPrimitives.ReadUInt64LittleEndian(all.AsSpan(at)), BinaryPrimitives.ReadUInt64LittleEndian(all.AsSpan(at + 8)));
        at += 16;
        if (stored != hash) throw Bad($"holds block {stored}, expected {hash}");
        var shape = _plan.Shape;
        if (Int() is var layers && layers != shape.Layers) throw Bad($"{layers} layers, the cache has {shape.Layers}");
        var keys = new byte[layers][];
        var values = new byte[layers][];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = Take(Int(), $"layer {l} keys");
            Check(keys[l], shape.KvHeads * _plan.Keys.BlockLayout(l).Total, _plan.Keys.CodecOf(l).HasBlockOutliers, $"layer {l} keys", Bad);
            values[l] = Take(Int(), $"layer {l} values");
            Check(values[l], shape.KvHeads * _plan.Values.BlockLayout(l).Total, _plan.Values.CodecOf(l).HasBlockOutliers, $"layer {l} values", Bad);
        }
        (Half[] Keys, Half[] Values)? sinks = null;
        if (at >= content) throw Bad("ends before the sink flag");
        byte flag = all[at++];
        if (flag > 1) throw Bad($"sink flag {flag}");
        if (flag == 1)
        {
            long n = (long)shape.Layers * shape.KvHeads * _plan.SinkTokens * shape.HeadDim;
            var k = Take(Int() is var nk && nk == n ? 2 * nk : throw Bad($"{nk} key sink values, expected {n}"), "key sinks");
            var v = Take(Int() is var nv && nv == n ? 2 * nv : throw Bad($"{nv} value sink values, expected {n}"), "value sinks");
            sinks = (MemoryMarshal.Cast<byte, Half>(k).ToArray(), MemoryMarshal.Cast<byte, Half>(v).ToArray());
        }
        if (at != content) throw Bad($"{content - at} bytes left over");
        return new HostPrefixTier.Entry(hash, keys, values, sinks, HostPrefixTier.EntryBytes(keys, values, sinks));
    }

    /// <summary>One block's bytes of a layer: exactly the dense block, or with sparse outlier rows beside it, the dense
    /// block then one (i32 length, rows) entry per KV head that ends exactly at the end.</summary>
    private void Check(byte[] a, long dense, bool outliers, string what, Func<string, InvalidDataException> bad)
    {
        if (!outliers)
        {
            if (a.Length != dense) throw bad($"{what}: {a.Length} bytes, a block is {dense}");
            return;
        }
        if (a.Length < dense + 4L * _plan.Shape.KvHeads) throw bad($"{what}: {a.Length} bytes, less than a block's {dense} and its row counts");
        if (SparseRows.Check(a, (int)dense, _plan.Shape.KvHeads) is { } wrong) throw bad($"{what}: {wrong}");
    }

    /// <summary>Removes a block's file (host memory holds it again, or it is dropped).</summary>
    internal void Remove(BlockHash hash)
    {
        if (!_byHash.Remove(hash, out var node)) return;
        _lru.Remove(node);
        Bytes -= node.Value.Bytes;
        SpillFolder.TryDelete(node.Value.Path);
    }

    /// <summary>Removes every file and the folder.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _byHash.Clear();
        _lru.Clear();
        Bytes = 0;
        _folder?.Dispose();
    }
}
