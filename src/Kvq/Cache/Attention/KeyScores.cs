using System.Numerics.Tensors;

namespace Kvq.Cache.Attention;

/// <summary>
/// Raw attention scores of query rows against one block of stored keys: the one routine that both attention and the
/// policies' observation pass use, so both see the same numbers bit for bit.
/// </summary>
internal static class KeyScores
{
    /// <summary>scores (nq, count) = qs (nq, headDim, pre-scaled) x keys of slots [s0, s0 + count) of one head (in
    /// block <paramref name="blockId"/>), plus the slots' log-weights under a merging policy. A codec's fused kernel
    /// reads encoded blocks, and block 0 under sink rows too where the codec fuses it (<see cref="Codecs.KvCodec.FusesUnderSink"/>:
    /// its sink rows' scores are then recomputed from their exact copies, <see cref="SinkScores"/>); staged tokens and
    /// other codecs' sink block go through a decoded <paramref name="tile"/>.</summary>
    public static void Block(IKvBlockReader kv, int layer, int head, int s0, int count, int blockId, ReadOnlySpan<float> qs, int nq,
        Span<float> scores, float[] tile)
    {
        var keys = kv.Keys;
        var codec = keys.Codecs[layer][head];
        bool underSink = keys.IsEncodedUnderSink(layer, s0);
        if (keys.IsEncodedTile(layer, s0) || underSink)
        {
            var kb = keys.Block(layer, blockId, head);
            var ko = keys.Outliers(layer, blockId, head);
            if (codec.PreRope) codec.ScoresPreRope(kb, ko, count, kv.Positions(layer, head, s0, count), kv.Shape.RopeOf(layer), qs, nq, scores, tile);
            else codec.Scores(kb, ko, count, qs, nq, scores, tile);
            if (underSink) SinkScores(kv, layer, head, count, qs, nq, scores, tile);
        }
        else
        {
            var t = tile.AsSpan(0, count * kv.Shape.HeadDim);
            keys.ReadTile(layer, head, s0, count, blockId, t);
            if (codec.PreRope) kv.Shape.RopeOf(layer).RotateAt(t, count, kv.Positions(layer, head, s0, count));
            TileMath.Scores(t, count, kv.Shape.HeadDim, qs, nq, scores);
        }
        // Gemma 2: scores soft-capped before the mask, softmax and any slot weights.
        if (kv.Shape.AttnSoftCap > 0) Tensors.Kernels.SoftCap(scores[..(nq * count)], kv.Shape.AttnSoftCap);
        // Scores of merged slots get + ln(weight): a slot standing for w tokens draws their attention.
        var w = kv.LogWeights(layer, head, s0, count);
        if (w.IsEmpty) return;
        for (int r = 0; r < nq; r++) TensorPrimitives.Add(scores.Slice(r * count, count), w, scores.Slice(r * count, count));
    }

    /// <summary>Replaces the scores of the block-0 slots that sink rows stand for (the first min(sink, count)) by the
    /// query rows' dots with the exact rows, rotated at their positions for pre-RoPE keys.</summary>
    private static void SinkScores(IKvBlockReader kv, int layer, int head, int count, ReadOnlySpan<float> qs, int nq, Span<float> scores,
        float[] tile)
    {
        var keys = kv.Keys;
        int hd = kv.Shape.HeadDim, n = Math.Min(keys.Sink!.Tokens, count);
        var t = tile.AsSpan(0, n * hd);
        keys.Sink.Overwrite(layer, head, t, n);
        if (keys.Codecs[layer][head].PreRope) kv.Shape.RopeOf(layer).RotateAt(t, n, kv.Positions(layer, head, 0, n));
        for (int r = 0; r < nq; r++)
            for (int j = 0; j < n; j++)
                scores[r * count + j] = TensorPrimitives.Dot(qs.Slice(r * hd, hd), t.Slice(j * hd, hd));
    }

    /// <summary>Gathers the query rows of one KV head's group for query tokens [t0, t1) of a (n, qDim) batch, token-major,
    /// scaled by 1/sqrt(headDim): rows (t1 - t0) x group x headDim.</summary>
    public static void GatherQueries(KvShape shape, ReadOnlySpan<float> q, int head, int t0, int t1, Span<float> qs)
    {
        int hd = shape.HeadDim, g = shape.GroupSize;
        for (int t = t0; t < t1; t++)
            for (int j = 0; j < g; j++)
                TensorPrimitives.Multiply(q.Slice(t * shape.QDim + (head * g + j) * hd, hd), shape.ScoreScale,
                    qs.Slice(((t - t0) * g + j) * hd, hd));
    }
}
