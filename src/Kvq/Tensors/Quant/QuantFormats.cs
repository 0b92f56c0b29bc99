namespace Kvq.Tensors.Quant;

/// <summary>ggml block-quantized formats (Q4_0 ... Q6_K): decode and fused dot with an f32 vector.</summary>
public static class QuantFormats
{
    public static bool HasFusedDot(GgmlType type) => false;

    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst) =>
        throw new NotSupportedException($"{type} decoding is not implemented yet");

    public static float Dot(GgmlType type, ReadOnlySpan<byte> src, ReadOnlySpan<float> x) =>
        throw new NotSupportedException($"{type} dot is not implemented yet");
}
