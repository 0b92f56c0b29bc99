namespace Kvq.Cache.Storage;

/// <summary>
/// Physical bytes of one layer's keys (or values): block id b, KV head h lives at ((b % ChunkBlocks) * heads + h) *
/// blockBytes inside chunk b / ChunkBlocks. Chunks are allocated as block ids first reach them, so the arena's
/// size is exactly what has been handed out (rounded up to a chunk).
/// </summary>
public sealed class BlockArena(int kvHeads, int blockBytes)
{
    public const int ChunkBlocks = 64;
    private readonly List<byte[]> _chunks = [];

    public int BlockBytes => blockBytes;
    public long AllocatedBytes => (long)_chunks.Count * ChunkBlocks * kvHeads * blockBytes;

    public Span<byte> Block(int blockId, int head)
    {
        int chunk = blockId / ChunkBlocks;
        while (_chunks.Count <= chunk) _chunks.Add(new byte[ChunkBlocks * kvHeads * blockBytes]);
        return _chunks[chunk].AsSpan(((blockId % ChunkBlocks) * kvHeads + head) * blockBytes, blockBytes);
    }
}
