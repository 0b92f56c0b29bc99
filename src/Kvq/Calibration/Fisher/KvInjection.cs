namespace Kvq.Calibration.Fisher;

/// <summary>
/// Called by <see cref="CalibrationForward"/> at each layer right after the K and V projections (biases added),
/// before RoPE and attention: <paramref name="keysPreRope"/> and <paramref name="values"/> are (T, kvDim), writable.
/// Lets a test perturb one element and measure the loss (finite differences), or a caller replace K/V by their
/// quantized versions.
/// </summary>
public delegate void KvInjection(int layer, Span<float> keysPreRope, Span<float> values);
