namespace Kvq.Calibration.Fisher;

/// <summary>
/// One layer's keys (before RoPE) and values over a window, and the gradient of the window's loss with respect to
/// each element. All four are (T, kvDim) row-major, kvDim = kvHeads * headDim (head-major within a token).
/// </summary>
public sealed class LayerKvGradients(float[] keys, float[] values, float[] keyGradients, float[] valueGradients)
{
    public float[] Keys { get; } = keys;
    public float[] Values { get; } = values;
    public float[] KeyGradients { get; } = keyGradients;
    public float[] ValueGradients { get; } = valueGradients;
}
