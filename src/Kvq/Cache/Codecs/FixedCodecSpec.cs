namespace Kvq.Cache.Codecs;

/// <summary>The spec of a format without options (f16, q4_0, int4-ch, ...): its name and its factory.</summary>
internal sealed record FixedCodecSpec(string Name, Func<KvCodecContext, KvCodec> Factory) : KvCodecSpec(Name)
{
    public override KvCodec Create(KvCodecContext context) => Factory(context);
}
