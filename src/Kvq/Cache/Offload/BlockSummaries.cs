namespace Kvq.Cache.Offload;

/// <summary>
/// Per (layer, KV head, block): the per-channel minimum and maximum of the block's keys AFTER RoPE (Quest, Tang et al.,
/// arXiv:2406.10774). For any query q and any key k of the block, q·k = Σ q_i k_i ≤ Σ max(q_i min_i, q_i max_i), so the
/// bound ranks blocks by the largest score they could give. Post-RoPE because attention scores rotated keys: a bound on
/// pre-RoPE keys would hold only with the query counter-rotated at every position of the block (a box of pre-RoPE keys
/// says nothing about q·R(p)k for an unrotated q). The keys are summarised as the model hands them (f32, rotated at
/// their positions here for pre-RoPE codecs), before any quantization: the bound is exact for those keys and, for a
/// lossy format, off by at most the codec's error.
/// </summary>
public sealed class BlockSummaries
{
    private readonly int _layers, _kvHeads, _headDim, _blockTokens;
    private readonly float[][] _data;   // per (layer, head): (block, [min | max], headDim)
    private readonly int[] _blocks;     // per layer: blocks summarised

    public BlockSummaries(int layers, int kvHeads, int headDim, int blockTokens)
    {
        (_layers, _kvHeads, _headDim, _blockTokens) = (layers, kvHeads, headDim, blockTokens);
        _data = new float[layers * kvHeads][];
        for (int i = 0; i < _data.Length; i++) _data[i] = new float[16 * 2 * headDim];
        _blocks = new int[layers];
    }

    public int BlockTokens => _blockTokens;

    /// <summary>Blocks of <paramref name="layer"/> with a summary.</summary>
    public int Blocks(int layer) => _blocks[layer];

    /// <summary>Bytes held (f32 min and max per channel, per block, head and layer, at the current capacity).</summary>
    public long AllocatedBytes
    {
        get
        {
            long n = 0;
            foreach (var d in _data) n += d.Length * 4L;
            return n;
        }
    }

    /// <summary>Adds one post-RoPE key of token <paramref name="slot"/> (slots in order, from 0) to its block's box.</summary>
    public void Add(int layer, int head, int slot, ReadOnlySpan<float> key)
    {
        int b = slot / _blockTokens, hd = _headDim;
        ref var data = ref _data[layer * _kvHeads + head];
        if ((b + 1) * 2 * hd > data.Length) Array.Resize(ref data, Math.Max(data.Length * 2, (b + 1) * 2 * hd));
        var min = data.AsSpan(b * 2 * hd, hd);
        var max = data.AsSpan(b * 2 * hd + hd, hd);
        if (slot % _blockTokens == 0)
        {
            key.CopyTo(min);
            key.CopyTo(max);
        }
        else
        {
            System.Numerics.Tensors.TensorPrimitives.Min(min, key, min);
            System.Numerics.Tensors.TensorPrimitives.Max(max, key, max);
        }
        if (head == _kvHeads - 1 && b + 1 > _blocks[layer]) _blocks[layer] = b + 1;
    }

    /// <summary>Forgets every block of every layer (the sequence is refilled).</summary>
    public void Clear() => Array.Clear(_blocks);

    /// <summary>max over the <paramref name="nq"/> query rows of the upper bound of q·k over block <paramref name="block"/>.</summary>
    public float UpperBound(int layer, int head, int block, ReadOnlySpan<float> qs, int nq)
    {
        int hd = _headDim;
        var data = _data[layer * _kvHeads + head].AsSpan(block * 2 * hd, 2 * hd);
        var min = data[..hd];
        var max = data[hd..];
        float best = float.NegativeInfinity;
        for (int r = 0; r < nq; r++)
        {
            var q = qs.Slice(r * hd, hd);
            float s = 0;
            // Scalar on purpose: 2 x headDim products per block and row, next to the block's 32 x headDim of attention.
            for (int i = 0; i < hd; i++) s += MathF.Max(q[i] * min[i], q[i] * max[i]);
            best = MathF.Max(best, s);
        }
        return best;
    }
}
