namespace Kvq.Calibration.Fisher;

/// <summary>
/// What <see cref="CalibrationForward"/> keeps of one window for <see cref="CalibrationBackward"/>: the loss, the
/// gradient of the loss with respect to the logits, and per layer the activations each backward step reads.
/// Per token: (2 dim + qDim + 3 kvDim + 2 ffn) floats per layer, plus dim + vocab (books-19m at T = 2048: ~300 MB).
/// </summary>
public sealed class CalibrationTape
{
    internal CalibrationTape(int[] tokens, double loss, float[] dLogits, float[] finalX, LayerTape[] layers)
    {
        Tokens = tokens;
        Loss = loss;
        DLogits = dLogits;
        FinalX = finalX;
        Layers = layers;
    }

    public int[] Tokens { get; }
    public int Length => Tokens.Length;
    /// <summary>Mean next-token cross-entropy over the window's Length-1 predictions, nats.</summary>
    public double Loss { get; }
    /// <summary>Keys of <paramref name="layer"/> before RoPE, (T, kvDim).</summary>
    public float[] Keys(int layer) => Layers[layer].KPre;
    /// <summary>Values of <paramref name="layer"/>, (T, kvDim).</summary>
    public float[] Values(int layer) => Layers[layer].V;

    internal float[] DLogits { get; }   // (T, vocab) d loss / d logits; the last row is zero (nothing to predict)
    internal float[] FinalX { get; }    // (T, dim) residual stream before the final norm
    internal LayerTape[] Layers { get; }
}

/// <summary>One layer's saved activations, all token-major.</summary>
internal sealed class LayerTape
{
    public required float[] XIn { get; init; }   // (T, dim) residual stream entering the layer
    public required float[] Q { get; init; }     // (T, qDim) queries after RoPE
    public required float[] KPre { get; init; }  // (T, kvDim) keys before RoPE (after any injection)
    public required float[] KRot { get; init; }  // (T, kvDim) keys after RoPE
    public required float[] V { get; init; }     // (T, kvDim)
    public required float[] XMid { get; init; }  // (T, dim) residual stream after the attention block
    public required float[] Gate { get; init; }  // (T, ffn) WGate x before silu (empty in a mixture-of-experts layer)
    public required float[] Up { get; init; }    // (T, ffn) WUp x
    public ExpertTape? Experts { get; init; }    // a mixture-of-experts layer's routing and expert activations
    public float[]? QRaw { get; init; }          // (T, qDim) queries before QK-norm (null without it)
    public float[]? KRaw { get; init; }          // (T, kvDim) keys before QK-norm
    public float[]? AttnProj { get; init; }      // (T, dim) attention output before its post-norm (Gemma; null without)
    public float[]? FfnProj { get; init; }       // (T, dim) feed-forward output before its post-norm
}
