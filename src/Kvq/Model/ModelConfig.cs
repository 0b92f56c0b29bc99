namespace Kvq.Model;

/// <summary>Hyper-parameters of a Llama-family decoder (llama, mistral, qwen2).</summary>
public sealed record ModelConfig
{
    public required string Architecture { get; init; }   // "llama", "mistral", "qwen2"
    public required int Dim { get; init; }               // model width (embedding length)
    public required int Layers { get; init; }
    public required int Heads { get; init; }             // query heads
    public required int KvHeads { get; init; }           // key/value heads (GQA: Heads % KvHeads == 0; MQA: 1)
    public required int HeadDim { get; init; }
    public required int FfnDim { get; init; }            // SwiGLU hidden width
    public required int VocabSize { get; init; }
    public required float NormEps { get; init; }         // RMSNorm epsilon
    public required float RopeBase { get; init; }        // theta
    public float RopeScale { get; init; } = 1f;          // linear position scaling (positions are divided by it)
    public int RopeDims { get; init; }                   // dims of each head that rotate (= HeadDim normally)
    public required RopeStyle RopeStyle { get; init; }
    public required int ContextLength { get; init; }     // trained context, for information
    public Experts.ExpertConfig? Experts { get; init; }  // mixture-of-experts feed-forward (null: dense SwiGLU)
    public int QDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;
    public int GroupSize => Heads / KvHeads;             // query heads per KV head

    public void Validate(string source)
    {
        void Check(bool ok, string what)
        {
            if (!ok) throw new Formats.ModelFormatException(source, "hyper-parameters", 0, what);
        }
        Check(Dim > 0 && Layers > 0 && Heads > 0 && KvHeads > 0 && HeadDim > 0 && FfnDim > 0 && VocabSize > 0,
            $"sizes must be positive: dim {Dim}, layers {Layers}, heads {Heads}, kv heads {KvHeads}, head dim {HeadDim}, ffn {FfnDim}, vocab {VocabSize}");
        Check(Heads % KvHeads == 0, $"query heads {Heads} is not a multiple of kv heads {KvHeads}");
        Check(HeadDim % 2 == 0, $"head dim {HeadDim} must be even for RoPE");
        Check(RopeDims > 0 && RopeDims <= HeadDim && RopeDims % 2 == 0, $"rope dims {RopeDims} must be even and <= head dim {HeadDim}");
        Check(NormEps > 0 && float.IsFinite(NormEps), $"norm epsilon {NormEps} must be positive");
        Check(RopeBase > 0 && float.IsFinite(RopeBase), $"rope base {RopeBase} must be positive");
        Experts?.Validate(source);
    }
}
