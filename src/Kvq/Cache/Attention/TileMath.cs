using System.Numerics.Tensors;

namespace Kvq.Cache.Attention;

/// <summary>Dense f32 tile products used by attention after a block is decoded.</summary>
public static class TileMath
{
    /// <summary>scores (nq, count) = q (nq, d) x tile (count, d)^T.</summary>
    public static void Scores(ReadOnlySpan<float> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        for (int i = 0; i < nq; i++)
        {
            var qi = q.Slice(i * d, d);
            var si = scores.Slice(i * count, count);
            for (int j = 0; j < count; j++) si[j] = TensorPrimitives.Dot(qi, tile.Slice(j * d, d));
        }
    }

    /// <summary>acc (nq, d) += w (nq, count) x tile (count, d).</summary>
    public static void Accumulate(ReadOnlySpan<float> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        for (int i = 0; i < nq; i++)
        {
            var ai = acc.Slice(i * d, d);
            var wi = w.Slice(i * count, count);
            for (int j = 0; j < count; j++)
            {
                float wj = wi[j];
                if (wj != 0f) TensorPrimitives.MultiplyAdd(tile.Slice(j * d, d), wj, ai, ai);
            }
        }
    }
}
