using Kvq.Cache.Codecs;

namespace Kvq.Cache.Storage;

/// <summary>
/// Physical bytes of one layer's keys (or values): block id b, KV head h lives at ((b % ChunkBlocks) * heads + h) *
/// blockBytes inside chunk b / ChunkBlocks. Chunks are allocated as block ids first reach them, so the arena's
/// size is exactly what has been handed out (rounded up to a chunk, and never past <paramref name="capacityBlocks"/>:
/// the last chunk is cut short, so a pool sized to a byte budget allocates at most that budget).
/// With <paramref name="outliers"/> (a format whose blocks keep a sparse part beside them, <see cref="BlockOutliers"/>),
/// each (block, head) also has its outlier rows, created on first use, moved with the block by copies and swaps, and
/// counted in <see cref="AllocatedBytes"/> as they are really held.
/// </summary>
/// <param name="file">The file tier: chunks live in this memory-mapped file instead of managed arrays (sparse outlier
/// rows stay in RAM).</param>
public sealed unsafe class BlockArena(int kvHeads, int blockBytes, int capacityBlocks = int.MaxValue, bool outliers = false,
    BlockFile? file = null)
{
    public const int ChunkBlocks = 64;
    // Extended while other threads read them (a batched step's appends): ChunkTable, not List.
    private readonly ChunkTable<byte[]> _chunks = new();
    private readonly ChunkTable<IntPtr> _mapped = new();   // file tier: where each chunk is mapped
    private readonly ChunkTable<BlockOutliers?[]> _outliers = new();
    private readonly OutlierBytes _outlierBytes = new();
    private long _allocated;

    public int BlockBytes => blockBytes;
    public bool HasOutliers => outliers;
    /// <summary>The file holding the blocks (file tier), or null when they are in RAM.</summary>
    public string? FilePath => file?.Path;
    /// <summary>Bytes of the file tier's file (0 in RAM).</summary>
    internal long FileBytes => file?.Length ?? 0;
    /// <summary>Fixed block bytes of every chunk handed out plus the sparse rows held beside blocks.</summary>
    public long AllocatedBytes => _allocated + _outlierBytes.Total;
    /// <summary>Bytes of sparse rows held beside blocks (part of <see cref="AllocatedBytes"/>).</summary>
    public long OutlierBytes => _outlierBytes.Total;

    /// <summary>The sparse rows of (block, head), or null for a format without them.</summary>
    public BlockOutliers? Outliers(int blockId, int head)
    {
        if (!outliers) return null;
        if ((uint)blockId >= (uint)capacityBlocks)
            throw new ArgumentOutOfRangeException(nameof(blockId), blockId, $"block id must be below the arena's {capacityBlocks} blocks");
        int chunk = blockId / ChunkBlocks;
        var table = _outliers.GetOrAdd(chunk, kvHeads, static (heads, _) => new BlockOutliers?[ChunkBlocks * heads]);
        ref var o = ref table[(blockId % ChunkBlocks) * kvHeads + head];
        return o ??= new BlockOutliers(_outlierBytes);
    }

    /// <summary>The sparse rows of (block, head) if they were ever created, else null; never creates them (read-only:
    /// attention's prefetch of the next blocks' rows calls this from its worker threads).</summary>
    public BlockOutliers? PeekOutliers(int blockId, int head)
    {
        if (!outliers || (uint)blockId >= (uint)capacityBlocks) return null;
        int chunk = blockId / ChunkBlocks;
        var tables = _outliers.Items;
        return chunk < tables.Length ? tables[chunk][(blockId % ChunkBlocks) * kvHeads + head] : null;
    }

    /// <summary>Bytes of the sparse rows of the given blocks, every head (what a sequence holds beside its blocks).</summary>
    public long OutlierBytesOf(ReadOnlySpan<int> blocks)
    {
        if (!outliers) return 0;
        long n = 0;
        var tables = _outliers.Items;
        foreach (int b in blocks)
        {
            int chunk = b / ChunkBlocks;
            if (chunk >= tables.Length) continue;
            for (int h = 0; h < kvHeads; h++) n += tables[chunk][(b % ChunkBlocks) * kvHeads + h]?.Bytes ?? 0;
        }
        return n;
    }

    /// <summary>Drops the sparse rows of a block (every head): the block was freed or is reused for new content.</summary>
    public void ClearOutliers(int blockId)
    {
        var tables = _outliers.Items;
        if (!outliers || blockId / ChunkBlocks >= tables.Length) return;
        for (int h = 0; h < kvHeads; h++) tables[blockId / ChunkBlocks][(blockId % ChunkBlocks) * kvHeads + h]?.Clear();
    }

    /// <summary>Copies block <paramref name="src"/> to <paramref name="dst"/> in every head, sparse rows included.</summary>
    public void CopyBlock(int src, int dst)
    {
        for (int h = 0; h < kvHeads; h++)
        {
            Block(src, h).CopyTo(Block(dst, h));
            if (outliers) Outliers(dst, h)!.CopyFrom(Outliers(src, h)!);
        }
    }

    public Span<byte> Block(int blockId, int head)
    {
        if ((uint)blockId >= (uint)capacityBlocks)
            throw new ArgumentOutOfRangeException(nameof(blockId), blockId, $"block id must be below the arena's {capacityBlocks} blocks");
        int chunk = blockId / ChunkBlocks;
        int offset = ((blockId % ChunkBlocks) * kvHeads + head) * blockBytes;
        // Chunks are added under a lock (ChunkTable): sequences of one cache append on several threads at once in a
        // batched step (Transformer.ForwardBatch), and two of them may reach a new chunk together. Readers need no
        // lock: a chunk, once published, never moves.
        if (file != null)
        {
            var mapped = _mapped.GetOrAdd(chunk, this, static (a, i) => a.MapChunk(i));
            return new Span<byte>((byte*)mapped + offset, blockBytes);
        }
        return _chunks.GetOrAdd(chunk, this, static (a, i) => a.NewChunk(i)).AsSpan(offset, blockBytes);
    }

    /// <summary>Chunk <paramref name="index"/> of the file tier, mapped.</summary>
    private IntPtr MapChunk(int index) => (IntPtr)file!.AddChunk(NextChunkBytes(index));

    /// <summary>The next RAM chunk; host memory that cannot be had is a <see cref="KvHostMemoryException"/> naming the
    /// size (the CLI prints it as one line), the arena unchanged.</summary>
    private byte[] NewChunk(int index)
    {
        long held = _allocated;
        int bytes = NextChunkBytes(index);
        try
        {
            return new byte[bytes];
        }
        catch (OutOfMemoryException e)
        {
            _allocated = held;
            throw new KvHostMemoryException($"out of host memory for the KV cache: {bytes:N0} more bytes could not be had for a chunk of " +
                                            $"{ChunkBlocks} blocks ({held:N0} bytes held in this layer's arena); give a smaller --ctx or --kv " +
                                            "format, or keep the blocks in memory-mapped files (--offload-dir DIR)", e);
        }
    }

    /// <summary>Bytes of chunk <paramref name="index"/> (the last one cut at the capacity), counted as allocated.</summary>
    private int NextChunkBytes(int index)
    {
        int blocks = (int)Math.Min(ChunkBlocks, (long)capacityBlocks - (long)index * ChunkBlocks);
        _allocated += (long)blocks * kvHeads * blockBytes;
        return blocks * kvHeads * blockBytes;
    }

    /// <summary>The bytes of <paramref name="blocks"/>, every head, as (block, head, bytes) (swap out), then with
    /// sparse rows, per (block, head) an i32 length and the rows' bytes.</summary>
    public byte[] CopyOut(int[] blocks)
    {
        long dense = (long)blocks.Length * kvHeads * blockBytes;
        var bytes = new byte[CopyOutBytes(blocks)];
        for (int i = 0; i < blocks.Length; i++)
            for (int h = 0; h < kvHeads; h++)
                Block(blocks[i], h).CopyTo(bytes.AsSpan((i * kvHeads + h) * blockBytes, blockBytes));
        if (!outliers) return bytes;
        int at = (int)dense;
        foreach (int b in blocks)
            for (int h = 0; h < kvHeads; h++) at = SparseRows.Write(bytes, at, Outliers(b, h)!.Raw);
        return bytes;
    }

    /// <summary>The length of what <see cref="CopyOut"/> returns for <paramref name="blocks"/>, without copying (the swap
    /// tiers check their room before a copy is made): the dense blocks, and per (block, head) an i32 length and its
    /// sparse rows.</summary>
    public long CopyOutBytes(ReadOnlySpan<int> blocks)
    {
        long total = (long)blocks.Length * kvHeads * blockBytes;
        if (outliers)
            foreach (int b in blocks)
                for (int h = 0; h < kvHeads; h++) total += 4 + (PeekOutliers(b, h)?.Raw.Length ?? 0);
        return total;
    }

    /// <summary>Writes what <see cref="CopyOut"/> returned into <paramref name="blocks"/> (swap in).</summary>
    public void CopyIn(int[] blocks, byte[] bytes)
    {
        for (int i = 0; i < blocks.Length; i++)
            for (int h = 0; h < kvHeads; h++)
                bytes.AsSpan((i * kvHeads + h) * blockBytes, blockBytes).CopyTo(Block(blocks[i], h));
        if (!outliers) return;
        var rows = new SparseRows(bytes, blocks.Length * kvHeads * blockBytes);
        foreach (int b in blocks)
            for (int h = 0; h < kvHeads; h++)
                Outliers(b, h)!.Load(rows.TryNext(out var r) ? r
                    : throw new InvalidDataException($"swapped bytes end inside the sparse rows of block {b}, head {h}"));
    }
}
