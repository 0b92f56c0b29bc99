namespace Kvq.Cache.Codecs;

/// <summary>
/// A format name parsed by its <see cref="KvFormat"/> row: the typed options of one format or family, and the codec
/// they build. Nothing below the parser sees the name again: a cache plan holds specs, and a spec creates its codecs.
/// </summary>
public abstract record KvCodecSpec(string Name)
{
    /// <summary>The codec of one (side, layer, KV head).</summary>
    public abstract KvCodec Create(KvCodecContext context);

    /// <summary>The spec each of <paramref name="layers"/> layers of one side uses, chosen once per cache plan. The same
    /// spec everywhere, except for formats whose layers differ (KVQuant's <c>:mixed</c> widths, from the profile).</summary>
    /// <param name="context">Layer 0, head 0 of the side: its block size, head dim and profile.</param>
    public virtual KvCodecSpec[] ForLayers(KvCodecContext context, int layers)
    {
        var all = new KvCodecSpec[layers];
        Array.Fill(all, this);
        return all;
    }

    public sealed override string ToString() => Name;
}
