namespace Kvq.Calibration.Fisher;

/// <summary>
/// The result of one calibration window: its loss (mean next-token cross-entropy over T-1 predictions, nats) and per
/// layer the K/V activations with their loss gradients.
/// </summary>
public sealed class KvGradients(int tokens, int kvDim, double loss, LayerKvGradients[] layers)
{
    public int Tokens { get; } = tokens;
    public int KvDim { get; } = kvDim;
    public double Loss { get; } = loss;
    public LayerKvGradients[] Layers { get; } = layers;
}
