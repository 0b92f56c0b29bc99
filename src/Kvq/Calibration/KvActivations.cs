using Kvq.Cache;

namespace Kvq.Calibration;

/// <summary>
/// What calibration learns from: per layer, the pre-RoPE keys and the values of every calibration token (attention
/// sinks left out), the token's position in its window (to rotate keys for post-RoPE statistics), and optionally a
/// weight per element (Fisher information, the squared gradient of the loss; null = uniform weights).
/// Arrays per layer are (tokens, kvHeads*headDim) row-major.
/// </summary>
public sealed class KvActivations
{
    public KvShape Shape { get; }
    public int Tokens { get; }
    public int[] Positions { get; }         // (tokens)
    public float[][] Keys { get; }          // per layer: (tokens, kvDim), pre-RoPE
    public float[][] Values { get; }        // per layer: (tokens, kvDim)
    public float[][]? KeyWeights { get; }   // per layer: (tokens, kvDim), >= 0
    public float[][]? ValueWeights { get; }

    public KvActivations(KvShape shape, int[] positions, float[][] keys, float[][] values,
        float[][]? keyWeights = null, float[][]? valueWeights = null)
    {
        int n = positions.Length;
        long size = (long)n * shape.KvDim;
        if (keys.Length != shape.Layers || values.Length != shape.Layers)
            throw new ArgumentException($"activations for {keys.Length}/{values.Length} layers, the model has {shape.Layers}");
        if ((keyWeights == null) != (valueWeights == null))
            throw new ArgumentException("give weights for both keys and values, or for neither");
        for (int l = 0; l < shape.Layers; l++)
        {
            Check(keys[l], size, $"keys of layer {l}");
            Check(values[l], size, $"values of layer {l}");
            if (keyWeights != null) Check(keyWeights[l], size, $"key weights of layer {l}");
            if (valueWeights != null) Check(valueWeights[l], size, $"value weights of layer {l}");
        }
        Shape = shape;
        Tokens = n;
        Positions = positions;
        Keys = keys;
        Values = values;
        KeyWeights = keyWeights;
        ValueWeights = valueWeights;
    }

    private static void Check(float[]? a, long size, string what)
    {
        if (a == null || a.Length != size) throw new ArgumentException($"{what}: expected {size} values, got {a?.Length ?? 0}");
    }

    public bool Weighted => KeyWeights != null;
}
