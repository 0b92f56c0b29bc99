using System.Buffers.Binary;

namespace Kvq.Cache.Storage;

/// <summary>
/// Reads the sparse part of a swapped-out arena as <see cref="BlockArena.CopyOut"/> writes it: after the dense block
/// bytes, one entry per (block, KV head), an i32 little-endian length then that many bytes of sparse rows. Swap-in
/// (<see cref="BlockArena.CopyIn"/>) and the session-file reader both walk it here, so they agree on the format and on
/// its bounds: an entry whose length runs past the bytes is refused, never read.
/// </summary>
public ref struct SparseRows(ReadOnlySpan<byte> bytes, int start)
{
    private readonly ReadOnlySpan<byte> _bytes = bytes;

    /// <summary>Byte offset of the next entry (after the last one read).</summary>
    public int Offset { get; private set; } = start;

    /// <summary>The next entry's rows; false (and <see cref="Offset"/> unchanged) where its length is negative or it
    /// runs past the bytes.</summary>
    public bool TryNext(out ReadOnlySpan<byte> rows)
    {
        rows = default;
        if ((long)Offset + 4 > _bytes.Length) return false;
        int n = BinaryPrimitives.ReadInt32LittleEndian(_bytes[Offset..]);
        if (n < 0 || (long)Offset + 4 + n > _bytes.Length) return false;
        rows = _bytes.Slice(Offset + 4, n);
        Offset += 4 + n;
        return true;
    }

    /// <summary>Checks that <paramref name="bytes"/> hold <paramref name="dense"/> bytes of blocks, then exactly
    /// <paramref name="entries"/> entries that end at the last byte: null when they do, else what is wrong. The session
    /// file reader and the prefix block files both check their items here.</summary>
    public static string? Check(ReadOnlySpan<byte> bytes, int dense, long entries)
    {
        if (dense < 0 || dense > bytes.Length) return $"{bytes.Length} bytes, less than the {dense} bytes of the blocks";
        var rows = new SparseRows(bytes, dense);
        for (long e = 0; e < entries; e++)
            if (!rows.TryNext(out _)) return $"sparse rows {e} of {entries} run past the {bytes.Length} bytes";
        return rows.Offset != bytes.Length ? $"{bytes.Length - rows.Offset} bytes after the last sparse rows" : null;
    }

    /// <summary>Writes one entry (length, rows) at <paramref name="at"/>; returns the offset after it.</summary>
    public static int Write(Span<byte> bytes, int at, ReadOnlySpan<byte> rows)
    {
        BinaryPrimitives.WriteInt32LittleEndian(bytes[at..], rows.Length);
        rows.CopyTo(bytes[(at + 4)..]);
        return at + 4 + rows.Length;
    }
}
