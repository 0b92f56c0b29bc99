using System.Numerics.Tensors;

namespace Kvq.Tensors;

/// <summary>Element-wise kernels of the forward pass, over spans (SIMD through TensorPrimitives).</summary>
public static class Kernels
{
    /// <summary>x = cap * tanh(x / cap) in place (cap 0: unchanged): Gemma 2's attention and final logit soft-capping.</summary>
    public static void SoftCap(Span<float> x, float cap)
    {
        if (cap <= 0) return;
        TensorPrimitives.Multiply(x, 1f / cap, x);
        TensorPrimitives.Tanh(x, x);
        TensorPrimitives.Multiply(x, cap, x);
    }

    /// <summary>out = x / rms(x) * weight.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> output)
    {
        // ggml-cpu's order (rms_norm_f32): each square rounded to f32, summed in f64 in index order, the mean rounded to
        // f32. Bitwise llama.cpp's norms then (checked on its graph, docs/models.md); a float SIMD dot differed in the last
        // bit at ~12% of values, which 8-bit activations downstream turn into flipped codes. O(n) against the O(n^2)
        // products around it.
        double sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float sq = x[i] * x[i];
            sum += sq;
        }
        float ss = (float)(sum / x.Length);
        float scale = 1f / MathF.Sqrt(ss + eps);
        TensorPrimitives.Multiply(x, scale, output);
        TensorPrimitives.Multiply(output, weight, output);
    }

    /// <summary>Scalar twin of <see cref="RmsNorm"/> in double precision (test oracle).</summary>
    public static void RmsNormReference(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> output)
    {
        double ss = 0;
        foreach (var v in x) ss += (double)v * v;
        double scale = 1 / Math.Sqrt(ss / x.Length + eps);
        for (int i = 0; i < x.Length; i++) output[i] = (float)(x[i] * scale * weight[i]);
    }

    /// <summary>gate = silu(gate) * up, in place.</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>In-place softmax over <paramref name="x"/>.</summary>
    public static void Softmax(Span<float> x)
    {
        float max = TensorPrimitives.Max(x);
        float sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float e = MathF.Exp(x[i] - max);
            x[i] = e;
            sum += e;
        }
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }
}
