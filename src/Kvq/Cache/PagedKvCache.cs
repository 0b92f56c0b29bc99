using Kvq.Cache.Codecs;
using Kvq.Cache.Storage;

namespace Kvq.Cache;

/// <summary>
/// The KV cache of a model: per layer, one arena for keys and one for values, addressed by block ids that all
/// layers share; sequences draw block ids from it. Formats come from <see cref="KvCacheConfig"/>.
/// </summary>
public sealed class PagedKvCache
{
    public KvShape Shape { get; }
    public KvCacheConfig Config { get; }
    public KvCodec KeyCodec { get; }
    public KvCodec ValueCodec { get; }
    internal BlockArena[] Keys { get; }     // per layer
    internal BlockArena[] Values { get; }   // per layer
    private readonly Stack<int> _free = new();
    private int _next;

    public PagedKvCache(KvShape shape, KvCacheConfig config)
    {
        Shape = shape;
        Config = config;
        KeyCodec = config.CreateKeyCodec(shape.HeadDim);
        ValueCodec = config.CreateValueCodec(shape.HeadDim);
        if (ValueCodec.PreRope) throw new KvSpecException($"'{ValueCodec.Name}' is a key format (pre-RoPE) and cannot store values");
        Keys = new BlockArena[shape.Layers];
        Values = new BlockArena[shape.Layers];
        for (int l = 0; l < shape.Layers; l++)
        {
            Keys[l] = new BlockArena(shape.KvHeads, KeyCodec.BlockBytes);
            Values[l] = new BlockArena(shape.KvHeads, ValueCodec.BlockBytes);
        }
    }

    public PagedKvSequence CreateSequence() => new(this);

    /// <summary>Bytes of one block in every layer and head, keys and values.</summary>
    public long BytesPerBlock => (long)Shape.Layers * Shape.KvHeads * (KeyCodec.BlockBytes + ValueCodec.BlockBytes);

    /// <summary>Bytes the arenas hold right now (all chunks allocated).</summary>
    public long AllocatedBytes
    {
        get
        {
            long n = 0;
            for (int l = 0; l < Shape.Layers; l++) n += Keys[l].AllocatedBytes + Values[l].AllocatedBytes;
            return n;
        }
    }

    internal int AllocateBlock() => _free.Count > 0 ? _free.Pop() : _next++;
    internal void FreeBlock(int id) => _free.Push(id);
}
