using Kvq.Cache.Offload;

namespace Kvq.Cache.Storage;

/// <summary>
/// Stores one token of one layer, every KV head, into a sequence's two sides: keys rotated at the token's RoPE position
/// first unless the key codec stores them pre-RoPE (attention rotates those), and, offloaded, the rotated keys added to
/// the block summaries (they bound what attention scores, whatever the codec stores).
/// </summary>
internal sealed class TokenWriter(KvShape shape, KvSideStore keys, KvSideStore values, BlockSummaries? summaries)
{
    private readonly float[] _rotated = new float[shape.HeadDim];   // a key being rotated
    private readonly bool _rotate = !keys.Codec.PreRope;

    /// <param name="k">The token's pre-RoPE keys, (kvHeads, headDim).</param>
    /// <param name="blocks">The layer's block ids.</param>
    public void Write(int layer, int slot, int pos, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<int> blocks)
    {
        int hd = shape.HeadDim;
        var rope = shape.RopeOf(layer);
        bool rotated = _rotate || summaries != null;
        Span<float> cos = stackalloc float[rope.RopeDims / 2];
        Span<float> sin = stackalloc float[rope.RopeDims / 2];
        if (rotated) rope.Angles(pos, cos, sin);
        for (int h = 0; h < shape.KvHeads; h++)
        {
            var kh = k.Slice(h * hd, hd);
            if (rotated)
            {
                kh.CopyTo(_rotated);
                rope.Rotate(_rotated, cos, sin);
                summaries?.Add(layer, h, slot, _rotated);
                if (_rotate) kh = _rotated;
            }
            keys.Store(layer, h, slot, pos, kh, blocks);
            values.Store(layer, h, slot, pos, v.Slice(h * hd, hd), blocks);
        }
    }
}
