namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>How a synthetic tensor's values are drawn.</summary>
public enum SyntheticInit
{
    /// <summary>A weight matrix: uniform with variance Gain^2 / fan-in (fan-in = dims[0]), so activations keep their
    /// scale through the block; written in the spec's weight type when its rows fit the type's blocks.</summary>
    Matrix,
    /// <summary>An embedding table: uniform +- Gain per element (rows are read one at a time, not summed), written in
    /// the spec's weight type like a matrix.</summary>
    Embedding,
    /// <summary>A norm weight: 1 +- Gain (uniform), never zero, always f32.</summary>
    Norm,
    /// <summary>A bias: uniform +- Gain, always f32.</summary>
    Bias,
    /// <summary>Exactly <see cref="SyntheticTensor.Values"/>, f32 (e.g. RoPE frequency factors).</summary>
    Values,
}

/// <summary>One tensor of a synthetic model: its GGUF name, shape in ggml order (dims[0] contiguous) and how to fill it.</summary>
public sealed record SyntheticTensor(string Name, long[] Dims, SyntheticInit Init, float Gain = 1f, float[]? Values = null)
{
    /// <summary>An earlier tensor of the same shape whose rows, in a seeded random order, are added with gain
    /// <see cref="EchoGain"/> (per element variance EchoGain^2 / fan-in): an output matrix that echoes the embeddings
    /// makes each token predict one successor strongly (a bigram), so that logits are peaked the way a trained model's
    /// are and top-1 comparisons are not decided by near-ties.</summary>
    public string? Echo { get; init; }
    public float EchoGain { get; init; }
    /// <summary>Centre of a <see cref="SyntheticInit.Norm"/> tensor's values (1: an identity-like norm).</summary>
    public float NormCenter { get; init; } = 1f;

    public static SyntheticTensor Matrix(string name, long cols, long rows, float gain = 1f) => new(name, [cols, rows], SyntheticInit.Matrix, gain);
    public static SyntheticTensor Embedding(string name, long cols, long rows, float gain = 1f) => new(name, [cols, rows], SyntheticInit.Embedding, gain);
    public static SyntheticTensor Norm(string name, long n, float spread = 0.2f) => new(name, [n], SyntheticInit.Norm, spread);
    public static SyntheticTensor Bias(string name, long n, float scale = 0.5f) => new(name, [n], SyntheticInit.Bias, scale);
    public static SyntheticTensor Exact(string name, float[] values) => new(name, [values.Length], SyntheticInit.Values, 1f, values);
}

/// <summary>One metadata entry, typed as llama.cpp expects to read it (uint32 counts, float32 factors).</summary>
public sealed record SyntheticMetadata(string Key, GgufValueType Type, object Value)
{
    public static SyntheticMetadata U32(string key, int v) => new(key, GgufValueType.UInt32, (uint)v);
    public static SyntheticMetadata F32(string key, float v) => new(key, GgufValueType.Float32, v);
    public static SyntheticMetadata Str(string key, string v) => new(key, GgufValueType.String, v);
    public static SyntheticMetadata Bool(string key, bool v) => new(key, GgufValueType.Bool, v);
    public static SyntheticMetadata Array(string key, Array v) => new(key, GgufValueType.Array, v);
}
