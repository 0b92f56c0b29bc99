using Kvq.Cache.Codecs;

namespace Kvq.Cache.Layout;

/// <summary>
/// The keys (or values) of a <see cref="KvLayoutPlan"/>: the parsed spec, the spec and block layout of each layer, and
/// the codec of each (layer, KV head). The heads of a layer share one block layout; layers may differ in width
/// (KVQuant's <c>:mixed</c>) but not in kind (pre-RoPE, whole-block encoding, residual window).
/// </summary>
public sealed class KvSidePlan
{
    public KvSide Side { get; }
    /// <summary>As parsed from <c>--kv</c>.</summary>
    public KvCodecSpec Spec { get; }
    /// <summary>Per layer (differs from <see cref="Spec"/> only where layers differ in width).</summary>
    public IReadOnlyList<KvCodecSpec> LayerSpecs { get; }
    /// <summary>Per layer, per KV head.</summary>
    internal KvCodec[][] Codecs { get; }

    /// <summary>Layer 0, head 0: the kind every codec of the side shares.</summary>
    public KvCodec Codec => Codecs[0][0];
    public bool PreRope => Codec.PreRope;
    public bool EncodesWholeBlocks => Codec.EncodesWholeBlocks;
    /// <summary>Tokens a sequence stages in f16 per layer and head before encoding them (whole-block formats: one block
    /// plus the residual window), 0 for per-token formats.</summary>
    public int StagingTokens => EncodesWholeBlocks ? Codec.BlockTokens + Codec.ResidualTokens : 0;

    internal KvSidePlan(KvSide side, KvCodecSpec spec, KvShape shape, int blockTokens, IKvProfile? profile)
    {
        Side = side;
        Spec = spec;
        var specs = spec.ForLayers(new KvCodecContext(side, blockTokens, shape.HeadDim, 0, 0, profile), shape.Layers);
        LayerSpecs = specs;
        Codecs = new KvCodec[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            Codecs[l] = new KvCodec[shape.KvHeads];
            for (int h = 0; h < shape.KvHeads; h++)
            {
                var c = specs[l].Create(new KvCodecContext(side, blockTokens, shape.HeadDim, l, h, profile));
                if (h > 0 && c.BlockBytes != Codecs[l][0].BlockBytes)
                    throw new KvSpecException($"{c.Name}: layer {l} head {h} has a block layout unlike head 0 of the layer");
                if (l + h > 0 && (c.PreRope != Codecs[0][0].PreRope || c.EncodesWholeBlocks != Codecs[0][0].EncodesWholeBlocks
                                  || c.ResidualTokens != Codecs[0][0].ResidualTokens))
                    throw new KvSpecException($"{c.Name}: layer {l} head {h} is a different kind of format than layer 0 head 0 " +
                                              "(pre-RoPE, whole-block encoding or residual window)");
                Codecs[l][h] = c;
            }
        }
    }

    /// <summary>The codec of a layer's head 0 (the heads of a layer share its layout).</summary>
    public KvCodec CodecOf(int layer) => Codecs[layer][0];

    /// <summary>The codec of one (layer, KV head): calibrated formats differ per head in their parameters (KVQuant's
    /// per-channel key scales), which a device cache copies.</summary>
    public KvCodec CodecOf(int layer, int kvHead) => Codecs[layer][kvHead];

    /// <summary>Bytes of one block of one KV head of a layer, by kind.</summary>
    public KvBytes BlockLayout(int layer) => Codecs[layer][0].BlockLayout;
}
