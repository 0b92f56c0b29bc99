using Kvq.Cache;
using Kvq.Tensors;

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
    /// <summary>Per-pair divisors of the RoPE angle (RopeDims/2): Llama 3.1's long-context scaling (GGUF rope_freqs.weight,
    /// or computed from an HF rope_scaling of type llama3); null: none.</summary>
    public float[]? RopeFreqFactors { get; init; }
    /// <summary>YaRN scaling (GGUF rope.scaling.type yarn); null: none.</summary>
    public RopeYarn? RopeYarn { get; init; }
    /// <summary>Per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3); weights in LayerWeights.QNorm/KNorm.</summary>
    public bool QkNorm { get; init; }
    /// <summary>Sliding attention window in tokens (a query sees itself and the Window-1 tokens before it) on the layers
    /// <see cref="SlidingLayers"/> marks (all when null); 0: every layer attends to the whole context.</summary>
    public int SlidingWindow { get; init; }
    public bool[]? SlidingLayers { get; init; }
    /// <summary>RoPE base and linear scale of the sliding layers where they differ from the global ones (Gemma 3: local
    /// base 10000, global 1e6 with the file's scaling); 0: the sliding layers rotate as the global ones.</summary>
    public float LocalRopeBase { get; init; }
    public float LocalRopeScale { get; init; } = 1f;
    /// <summary>Gemma-style decoder parts (<see cref="DecoderExtras"/>); null: a plain Llama decoder.</summary>
    public DecoderExtras? Extras { get; init; }

    /// <summary>The window of <paramref name="layer"/> in tokens, or 0 where it sees the whole context.</summary>
    public int WindowOf(int layer) => SlidingWindow > 0 && (SlidingLayers == null || SlidingLayers[layer]) ? SlidingWindow : 0;

    /// <summary>The features of this config beyond a plain Llama decoder (named for a backend that must refuse them).</summary>
    public IReadOnlyList<string> ExtendedFeatures()
    {
        var f = new List<string>();
        if (RopeFreqFactors != null) f.Add("RoPE frequency factors (llama3 scaling)");
        if (RopeYarn != null) f.Add("YaRN RoPE scaling");
        if (QkNorm) f.Add("QK-norm");
        if (SlidingWindow > 0) f.Add($"sliding-window attention ({SlidingWindow} tokens)");
        if (LocalRopeBase > 0) f.Add($"a RoPE base of {LocalRopeBase} on sliding layers");
        if (Extras != null) f.AddRange(Extras.Features());
        return f;
    }
    public required int ContextLength { get; init; }     // trained context, for information
    public Experts.ExpertConfig? Experts { get; init; }  // mixture-of-experts feed-forward (null: dense SwiGLU)
    public int QDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;
    public int GroupSize => Heads / KvHeads;             // query heads per KV head

    /// <summary>A new <see cref="Rope"/> for these RoPE settings (each has its own cached angle table).</summary>
    public Rope CreateRope() => new(HeadDim, RopeDims, RopeBase, RopeScale, RopeStyle, RopeFreqFactors, RopeYarn);

    /// <summary>The geometry of this model's KV cache: layers, KV heads, head dim, GQA group, RoPE and per-layer windows.</summary>
    public KvShape CreateKvShape()
    {
        var rope = CreateRope();
        Rope[]? layers = null;
        if (LocalRopeBase > 0 && SlidingWindow > 0)
        {
            // Gemma 3: sliding layers rotate with their own base.
            var local = new Rope(HeadDim, RopeDims, LocalRopeBase, LocalRopeScale, RopeStyle);
            layers = Enumerable.Range(0, Layers).Select(l => WindowOf(l) > 0 ? local : rope).ToArray();
        }
        return new(Layers, KvHeads, Heads, HeadDim, rope)
        {
            LayerWindows = SlidingWindow > 0 ? Enumerable.Range(0, Layers).Select(WindowOf).ToArray() : null,
            LayerRopes = layers,
            AttnSoftCap = Extras?.AttnSoftCap ?? 0f,
        };
    }

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
        Check(RopeFreqFactors == null || RopeFreqFactors.Length == RopeDims / 2,
            $"{RopeFreqFactors?.Length} RoPE frequency factors, expected one per rotated pair ({RopeDims / 2})");
        if (RopeFreqFactors != null)
            foreach (var f in RopeFreqFactors) Check(f > 0 && float.IsFinite(f), $"RoPE frequency factor {f} must be positive and finite");
        Check(RopeYarn == null || (RopeYarn.Factor >= 1 && float.IsFinite(RopeYarn.Factor) && RopeYarn.OriginalContext > 0),
            $"YaRN factor {RopeYarn?.Factor} must be >= 1 and its original context {RopeYarn?.OriginalContext} positive");
        Check(SlidingWindow >= 0, $"sliding window {SlidingWindow} must not be negative");
        Check(SlidingLayers == null || SlidingLayers.Length == Layers, $"{SlidingLayers?.Length} sliding-layer flags for {Layers} layers");
        Check(LocalRopeBase >= 0 && float.IsFinite(LocalRopeBase) && LocalRopeScale > 0, $"local rope base {LocalRopeBase} and scale {LocalRopeScale} must be positive");
        Extras?.Validate(source);
        Experts?.Validate(source);
    }
}
