namespace Kvq.Cache.Storage;

/// <summary>
/// Physical bytes of one layer's keys (or values): block id b, KV head h lives at ((b % ChunkBlocks) * heads + h) *
/// blockBytes inside chunk b / ChunkBlocks. Chunks are allocated as block ids first reach them, so the arena's
/// size is exactly what has been handed out (rounded up to a chunk, and never past <paramref name="capacityBlocks"/>:
/// the last chunk is cut short, so a pool sized to a byte budget allocates at most that budget).
/// </summary>
public sealed class BlockArena(int kvHeads, int blockBytes, int capacityBlocks = int.MaxValue)
{
    public const int ChunkBlocks = 64;
    private readonly List<byte[]> _chunks = [];
    private long _allocated;

    public int BlockBytes => blockBytes;
    public long AllocatedBytes => _allocated;

    public Span<byte> Block(int blockId, int head)
    {
        if ((uint)blockId >= (uint)capacityBlocks)
            throw new ArgumentOutOfRangeException(nameof(blockId), blockId, $"block id must be below the arena's {capacityBlocks} blocks");
        int chunk = blockId / ChunkBlocks;
        while (_chunks.Count <= chunk)
        {
            int blocks = (int)Math.Min(ChunkBlocks, (long)capacityBlocks - (long)_chunks.Count * ChunkBlocks);
            _chunks.Add(new byte[blocks * kvHeads * blockBytes]);
            _allocated += (long)blocks * kvHeads * blockBytes;
        }
        return _chunks[chunk].AsSpan(((blockId % ChunkBlocks) * kvHeads + head) * blockBytes, blockBytes);
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
