namespace Kvq.Calibration.Fisher;

/// <summary>
/// Calibration elements of one layer and side (K before RoPE, or V) paired with their Fisher weights: row i of
/// <see cref="Values"/> and of <see cref="Weights"/> is one token of one window, (Rows, Width) row-major,
/// Width = kvDim (head-major: channel c of KV head h is column h * headDim + c). Weight = (d loss / d element)^2,
/// loss = the window's mean next-token cross-entropy.
/// </summary>
public readonly struct FisherSamples(int rows, int width, ReadOnlyMemory<float> values, ReadOnlyMemory<float> weights)
{
    public int Rows { get; } = rows;
    public int Width { get; } = width;
    public ReadOnlyMemory<float> Values { get; } = values;
    public ReadOnlyMemory<float> Weights { get; } = weights;

    public ReadOnlySpan<float> ValueRow(int row) => Values.Span.Slice(row * Width, Width);
    public ReadOnlySpan<float> WeightRow(int row) => Weights.Span.Slice(row * Width, Width);
}
