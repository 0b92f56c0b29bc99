using System.Numerics.Tensors;

namespace Kvq.Cache.Attention;

/// <summary>
/// Partial attention states of several parts of a sequence's keys (shards of its blocks, one per GPU, or ranges of
/// one GPU's blocks): per part and query row (row = query token x heads + query head) the running max m, the sum of
/// exp(score - m) l, and the unnormalised weighted value vector acc = sum exp(score - m) v. Laid out part-major,
/// [part][row], which is what an all-gather of each part's rows produces; <see cref="Combine"/> merges the parts
/// exactly (log-sum-exp), so attention over the whole equals the combination of attention over the parts.
/// </summary>
public sealed class AttentionStates
{
    public int Parts { get; }
    public int Rows { get; }
    public int HeadDim { get; }
    /// <summary>[part][row]: the running max (-inf for a part that saw no key for the row).</summary>
    public float[] Max { get; }
    /// <summary>[part][row]: the sum of exp(score - max) (0 for a part that saw no key for the row).</summary>
    public float[] Sum { get; }
    /// <summary>[part][row][headDim]: sum of exp(score - max) x value.</summary>
    public float[] Acc { get; }

    public AttentionStates(int parts, int rows, int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(parts);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        Parts = parts;
        Rows = rows;
        HeadDim = headDim;
        Max = new float[checked(parts * rows)];
        Sum = new float[parts * rows];
        Acc = new float[checked(parts * rows * headDim)];
        Clear();
    }

    /// <summary>Every state empty (max -inf, sum 0, acc 0).</summary>
    public void Clear()
    {
        Max.AsSpan().Fill(float.NegativeInfinity);
        Sum.AsSpan().Clear();
        Acc.AsSpan().Clear();
    }

    /// <summary>output[row][headDim] = the attention of each row over all parts: sum_p acc_p e^(m_p - M) / sum_p l_p
    /// e^(m_p - M), M the largest max among the parts that saw a key (empty parts take no part, not even in M). A row
    /// no part saw is an error: under causal attention every query sees at least its own token.</summary>
    public void Combine(Span<float> output) => Combine(Max, Sum, Acc, Parts, Rows, HeadDim, output);

    /// <summary>The merge of <see cref="Combine(Span{float})"/> over raw [part][row] arrays (as an all-gather leaves
    /// them on a host).</summary>
    public static void Combine(ReadOnlySpan<float> max, ReadOnlySpan<float> sum, ReadOnlySpan<float> acc, int parts, int rows, int headDim,
        Span<float> output)
    {
        if (max.Length < parts * rows || sum.Length < parts * rows || acc.Length < (long)parts * rows * headDim)
            throw new ArgumentException($"states hold {max.Length} max / {sum.Length} sum / {acc.Length} acc values; {parts} parts x {rows} rows x {headDim} are needed");
        if (output.Length < (long)rows * headDim)
            throw new ArgumentException($"output holds {output.Length} floats; {rows} rows x {headDim} are needed", nameof(output));
        Span<float> row = headDim <= 1024 ? stackalloc float[headDim] : new float[headDim];
        for (int r = 0; r < rows; r++)
        {
            float m = float.NegativeInfinity;
            for (int p = 0; p < parts; p++)
                if (sum[p * rows + r] > 0f) m = Math.Max(m, max[p * rows + r]);
            if (float.IsNegativeInfinity(m))
                throw new InvalidOperationException($"attention row {r}: no part saw a key (every part's sum is 0)");
            double total = 0;
            row.Clear();
            for (int p = 0; p < parts; p++)
            {
                int st = p * rows + r;
                if (sum[st] <= 0f) continue;
                float f = MathF.Exp(max[st] - m);
                total += (double)sum[st] * f;
                TensorPrimitives.MultiplyAdd(acc.Slice(st * headDim, headDim), f, row, row);
            }
            TensorPrimitives.Multiply(row, (float)(1 / total), output.Slice(r * headDim, headDim));
        }
    }
}
