namespace Kvq.Cache.Storage;

/// <summary>
/// Physical bytes of one layer's keys (or values): block id b, KV head h lives at ((b % ChunkBlocks) * heads + h) *
/// blockBytes inside chunk b / ChunkBlocks. Chunks are allocated as block ids first reach them, so the arena's
/// size is exactly what has been handed out (rounded up to a chunk, and never past <paramref name="capacityBlocks"/>:
/// the last chunk is cut short, so a pool sized to a byte budget allocates at most that budget).
/// </summary>
/// <param name="file">The file tier: chunks live in this memory-mapped file instead of managed arrays.</param>
public sealed unsafe class BlockArena(int kvHeads, int blockBytes, int capacityBlocks = int.MaxValue, BlockFile? file = null)
{
    public const int ChunkBlocks = 64;
    private readonly List<byte[]> _chunks = [];
    private readonly List<IntPtr> _mapped = [];   // file tier: where each chunk is mapped
    private long _allocated;

    public int BlockBytes => blockBytes;
    public long AllocatedBytes => _allocated;
    /// <summary>The file holding the blocks (file tier), or null when they are in RAM.</summary>
    public string? FilePath => file?.Path;

    public Span<byte> Block(int blockId, int head)
    {
        if ((uint)blockId >= (uint)capacityBlocks)
            throw new ArgumentOutOfRangeException(nameof(blockId), blockId, $"block id must be below the arena's {capacityBlocks} blocks");
        int chunk = blockId / ChunkBlocks;
        int offset = ((blockId % ChunkBlocks) * kvHeads + head) * blockBytes;
        if (file != null)
        {
            while (_mapped.Count <= chunk) _mapped.Add((IntPtr)file.AddChunk(NextChunkBytes(_mapped.Count)));
            return new Span<byte>((byte*)_mapped[chunk] + offset, blockBytes);
        }
        while (_chunks.Count <= chunk) _chunks.Add(new byte[NextChunkBytes(_chunks.Count)]);
        return _chunks[chunk].AsSpan(offset, blockBytes);
    }

    /// <summary>Bytes of chunk <paramref name="index"/> (the last one cut at the capacity), counted as allocated.</summary>
    private int NextChunkBytes(int index)
    {
        int blocks = (int)Math.Min(ChunkBlocks, (long)capacityBlocks - (long)index * ChunkBlocks);
        _allocated += (long)blocks * kvHeads * blockBytes;
        return blocks * kvHeads * blockBytes;
    }

    /// <summary>The bytes of <paramref name="blocks"/>, every head, as (block, head, bytes) (swap out).</summary>
    public byte[] CopyOut(int[] blocks)
    {
        var bytes = new byte[(long)blocks.Length * kvHeads * blockBytes];
        for (int i = 0; i < blocks.Length; i++)
            for (int h = 0; h < kvHeads; h++)
                Block(blocks[i], h).CopyTo(bytes.AsSpan((i * kvHeads + h) * blockBytes, blockBytes));
        return bytes;
    }

    /// <summary>Writes what <see cref="CopyOut"/> returned into <paramref name="blocks"/> (swap in).</summary>
    public void CopyIn(int[] blocks, byte[] bytes)
    {
        for (int i = 0; i < blocks.Length; i++)
            for (int h = 0; h < kvHeads; h++)
                bytes.AsSpan((i * kvHeads + h) * blockBytes, blockBytes).CopyTo(Block(blocks[i], h));
    }
}
