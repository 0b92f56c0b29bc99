using System.Numerics.Tensors;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// Reverse-mode twins of the element-wise ops of the forward pass. Each takes the forward inputs (recomputing what it
/// needs, in double where a sum decides the precision) and the gradient of the loss with respect to the op's output.
/// Functions named ...Add accumulate into their gradient output (the residual stream and fan-in sum there anyway).
/// </summary>
public static class BackwardKernels
{
    /// <summary>
    /// Cross-entropy of one row of logits against <paramref name="target"/>: returns -log softmax(logits)[target] (nats)
    /// and writes dLogits = scale * (softmax(logits) - onehot(target)). Softmax in double.
    /// </summary>
    public static double SoftmaxCrossEntropy(ReadOnlySpan<float> logits, int target, float scale, Span<float> dLogits)
    {
        if ((uint)target >= (uint)logits.Length)
            throw new ArgumentOutOfRangeException(nameof(target), $"target {target} is outside the vocabulary (0..{logits.Length - 1})");
        float max = TensorPrimitives.Max(logits);
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += Math.Exp((double)logits[i] - max);
        double inv = 1 / sum;
        for (int i = 0; i < logits.Length; i++) dLogits[i] = (float)(scale * Math.Exp((double)logits[i] - max) * inv);
        dLogits[target] -= scale;
        return Math.Log(sum) + max - logits[target];
    }

    /// <summary>
    /// y = x * r * weight with r = 1/sqrt(mean(x^2) + eps) (<see cref="Kernels.RmsNorm"/>). Adds
    /// dx = r * g - r^3 * x * (g . x) / n, g = dy * weight, to <paramref name="dx"/>.
    /// </summary>
    public static void RmsNormBackwardAdd(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps,
        ReadOnlySpan<float> dy, Span<float> dx)
    {
        int n = x.Length;
        double ss = 0, gx = 0;
        for (int i = 0; i < n; i++)
        {
            ss += (double)x[i] * x[i];
            gx += (double)dy[i] * weight[i] * x[i];
        }
        double r = 1 / Math.Sqrt(ss / n + eps);
        float a = (float)r;
        float b = (float)(r * r * r * gx / n);
        for (int i = 0; i < n; i++) dx[i] += a * dy[i] * weight[i] - b * x[i];
    }

    /// <summary>
    /// h = silu(gate) * up (<see cref="Kernels.SwiGlu"/>). Writes dGate = dh * up * silu'(gate) and dUp = dh * silu(gate),
    /// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
    /// </summary>
    public static void SwiGluBackward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, ReadOnlySpan<float> dh,
        Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            float s = 1f / (1f + MathF.Exp(-g));
            dUp[i] = dh[i] * g * s;
            dGate[i] = dh[i] * up[i] * s * (1f + g * (1f - s));
        }
    }

    /// <summary>
    /// The transpose (= inverse) of <see cref="Rope.RotateHeads"/>: rotates every head of a (heads*headDim) gradient
    /// by minus the angle of <paramref name="position"/>, taking a gradient after RoPE to one before it.
    /// </summary>
    public static void RotateHeadsTransposed(Rope rope, Span<float> vec, int heads, long position)
    {
        Span<float> cos = stackalloc float[rope.RopeDims / 2];
        Span<float> sin = stackalloc float[rope.RopeDims / 2];
        rope.Angles(position, cos, sin);
        TensorPrimitives.Negate(sin, sin);
        for (int h = 0; h < heads; h++) rope.Rotate(vec.Slice(h * rope.HeadDim, rope.HeadDim), cos, sin);
    }
}
