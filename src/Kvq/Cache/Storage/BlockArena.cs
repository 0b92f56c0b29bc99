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
}
