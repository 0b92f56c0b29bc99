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
    private readonly int _layers, _kvHeads, _headDim, _blockTokens, _boxTokens, _boxes;
    private readonly float[][] _data;   // per (layer, head): (box, [min | max], headDim), boxes of _boxTokens tokens
    private readonly int[] _blocks;     // per layer: blocks summarised

    /// <param name="boxTokens">Tokens one min/max box covers (a divisor of the block size; default the whole block): a
    /// block's bound is the largest of its boxes' bounds, tighter with smaller boxes (RoPE turns fast channels within a
    /// block), at twice the summary bytes per halving.</param>
    public BlockSummaries(int layers, int kvHeads, int headDim, int blockTokens, int boxTokens = 0)
    {
        if (boxTokens <= 0 || blockTokens % boxTokens != 0) boxTokens = blockTokens;
        (_layers, _kvHeads, _headDim, _blockTokens, _boxTokens) = (layers, kvHeads, headDim, blockTokens, boxTokens);
        _boxes = blockTokens / boxTokens;
        _data = new float[layers * kvHeads][];
        for (int i = 0; i < _data.Length; i++) _data[i] = new float[16 * 2 * headDim];
        _blocks = new int[layers];
    }

    public int BoxTokens => _boxTokens;

    public int Layers => _layers;

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
        int b = slot / _blockTokens, x = slot / _boxTokens, hd = _headDim;
        ref var data = ref _data[layer * _kvHeads + head];
        if ((x + 1) * 2 * hd > data.Length) Array.Resize(ref data, Math.Max(data.Length * 2, (x + 1) * 2 * hd));
        var min = data.AsSpan(x * 2 * hd, hd);
        var max = data.AsSpan(x * 2 * hd + hd, hd);
        if (slot % _boxTokens == 0)
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
        var all = _data[layer * _kvHeads + head];
        float best = float.NegativeInfinity;
        for (int x = block * _boxes; x < (block + 1) * _boxes; x++)
        {
            var min = all.AsSpan(x * 2 * hd, hd);
            var max = all.AsSpan(x * 2 * hd + hd, hd);
            for (int r = 0; r < nq; r++)
            {
                var q = qs.Slice(r * hd, hd);
                float s = 0;
                // Scalar on purpose: 2 x headDim products per box and row, next to the block's 32 x headDim of attention.
                for (int i = 0; i < hd; i++) s += MathF.Max(q[i] * min[i], q[i] * max[i]);
                best = MathF.Max(best, s);
            }
        }
        return best;
    }

    /// <summary>Per query row, a score estimate for block <paramref name="block"/>: over its boxes, the largest
    /// q·c + <paramref name="spread"/> x Σ|q_i| w_i, with c the box's centre ((min + max) / 2) and w its half width.
    /// At spread 1 this is the upper bound (<see cref="UpperBound"/>, row by row); at 0 the score of the box centre,
    /// a typical rather than a best-case score (a mean-key estimate at no extra bytes).</summary>
    /// <param name="tokens">Tokens of the block summarised so far (its boxes past them are not read).</param>
    /// <param name="rows">(nq) output: row r's estimate.</param>
    public void RowEstimates(int layer, int head, int block, int tokens, ReadOnlySpan<float> qs, int nq, float spread, Span<float> rows)
    {
        int hd = _headDim;
        var all = _data[layer * _kvHeads + head];
        rows[..nq].Fill(float.NegativeInfinity);
        int boxes = Math.Clamp((tokens + _boxTokens - 1) / _boxTokens, 1, _boxes);
        for (int x = block * _boxes; x < block * _boxes + boxes; x++)
        {
            var min = all.AsSpan(x * 2 * hd, hd);
            var max = all.AsSpan(x * 2 * hd + hd, hd);
            for (int r = 0; r < nq; r++)
            {
                var q = qs.Slice(r * hd, hd);
                float centre = 0, width = 0;
                // Scalar on purpose, as in UpperBound.
                for (int i = 0; i < hd; i++)
                {
                    centre += q[i] * (min[i] + max[i]);
                    width += MathF.Abs(q[i]) * (max[i] - min[i]);
                }
                rows[r] = MathF.Max(rows[r], 0.5f * (centre + spread * width));
            }
        }
    }
}
