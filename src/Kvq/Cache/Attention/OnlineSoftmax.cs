using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Kvq.Cache.Attention;

/// <summary>The online-softmax step of one query row over one block of scores (Milakov and Gimelshein): the running max
/// grows, the row becomes exp(score - max), and what was accumulated so far is rescaled.</summary>
internal static class OnlineSoftmax
{
    /// <summary>Updates running max <paramref name="m"/> and sum <paramref name="l"/> with <paramref name="live"/> (the
    /// visible scores, overwritten with their weights) and rescales <paramref name="acc"/> (headDim) when the max grew.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Update(Span<float> live, ref float m, ref float l, Span<float> acc)
    {
        // Vectorised exp over the row (a scalar MathF.Exp per score was ~20% of prefill).
        float mx, sum;
        if (live.Length == 32 && Vector512.IsHardwareAccelerated) ExpRow32(live, m, out mx, out sum);
        else
        {
            mx = Math.Max(m, TensorPrimitives.Max(live));
            TensorPrimitives.Subtract(live, mx, live);
            TensorPrimitives.Exp(live, live);
            sum = TensorPrimitives.Sum(live);
        }
        // An unchanged max (most blocks after the first few) skips the call: exp(0) is exactly 1.
        float corr = float.IsNegativeInfinity(m) ? 0f : m == mx ? 1f : MathF.Exp(m - mx);
        if (corr != 1f) TensorPrimitives.Multiply(acc, corr, acc);
        l = l * corr + sum;
        m = mx;
    }

    /// <summary>A full 32-score row in two registers: new running max, exp(x - max) in place, and the row sum
    /// (the common case of the softmax update, without five library calls per row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ExpRow32(Span<float> row, float runningMax, out float mx, out float sum)
    {
        var a = Vector512.Create((ReadOnlySpan<float>)row[..16]);
        var b = Vector512.Create((ReadOnlySpan<float>)row[16..32]);
        mx = Math.Max(runningMax, MaxOf(Vector512.Max(a, b)));
        var vm = Vector512.Create(mx);
        a = Vector512.Exp(a - vm);
        b = Vector512.Exp(b - vm);
        a.CopyTo(row);
        b.CopyTo(row[16..]);
        sum = Vector512.Sum(a + b);
    }

    private static float MaxOf(Vector512<float> v)
    {
        var m = Vector256.Max(v.GetLower(), v.GetUpper());
        var m2 = Vector128.Max(m.GetLower(), m.GetUpper());
        m2 = Vector128.Max(m2, Vector128.Shuffle(m2, Vector128.Create(2, 3, 0, 1)));
        m2 = Vector128.Max(m2, Vector128.Shuffle(m2, Vector128.Create(1, 0, 3, 2)));
        return m2.ToScalar();
    }
}
