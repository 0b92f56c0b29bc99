namespace Kvq.Cache.Codecs;

/// <summary>
/// One row of the format table (<see cref="KvCodecRegistry"/>), as ggml's <c>type_traits</c>: the name the CLI lists, a
/// description, and <see cref="Parse"/> from a name to a typed <see cref="KvCodecSpec"/>, which creates the codecs.
/// A family row (nuq, lrR+) parses every name of its family, not only <see cref="Name"/>.
/// </summary>
/// <param name="Parse">Name -> spec; null when the name is not of this row; throws <see cref="KvSpecException"/> on a
/// malformed name of the row's family.</param>
public sealed record KvFormat(string Name, string Description, Func<string, KvCodecSpec?> Parse)
{
    /// <summary>The codec of one (side, layer, KV head) of a spec this row parsed.</summary>
    public static KvCodec Create(KvCodecSpec spec, KvCodecContext context) => spec.Create(context);

    /// <summary>A row without options: the name parses to one spec, whose codecs come from <paramref name="create"/>.</summary>
    public static KvFormat Fixed(string name, string description, Func<KvCodecContext, KvCodec> create)
    {
        var spec = new FixedCodecSpec(name, create);
        return new KvFormat(name, description, _ => spec);
    }
}
