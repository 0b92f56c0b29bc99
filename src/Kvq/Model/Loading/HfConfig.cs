using System.Text.Json;
using Kvq.Formats.Safetensors;
using Kvq.Tensors;
using Kvq.Tokenizers.HuggingFace;

namespace Kvq.Model.Loading;

/// <summary>
/// A Hugging Face config.json of a Llama-family decoder (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM),
/// turned into a <see cref="ModelConfig"/> with <see cref="RopeStyle.Neox"/> (HF rotate-half, Q/K rows as stored).
/// Absent keys take the defaults of the transformers config classes.
/// </summary>
public sealed record HfConfig
{
    public required ModelConfig Model { get; init; }
    /// <summary>The architectures[] entry that was recognised, e.g. "LlamaForCausalLM" (empty when only model_type was given).</summary>
    public required string ArchitectureClass { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry biases (qwen2). Llama's attention_bias also biases o_proj, which is refused.</summary>
    public required bool QkvBias { get; init; }
    /// <summary>Mistral/Qwen2 sliding-window size when the config enables it; recorded, not applied by the loader.</summary>
    public int? SlidingWindow { get; init; }
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = [];
    public string? TorchDtype { get; init; }

    /// <summary>What this config tells the tokenizer (vocab_size, bos_token_id, eos_token_id).</summary>
    public HfModelTokens Tokens => new(Model.VocabSize, BosTokenId, EosTokenIds);

    private static readonly (string Class, string ModelType)[] Known =
        [("LlamaForCausalLM", "llama"), ("MistralForCausalLM", "mistral"), ("Qwen2ForCausalLM", "qwen2")];

    public static HfConfig Read(string configPath)
    {
        using var json = JsonSource.Read(configPath, "config.json");
        return Parse(json);
    }

    internal static HfConfig Parse(JsonSource json)
    {
        var root = json.Root;
        bool Has(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

        // Architecture: the first recognised architectures[] entry, else model_type.
        string cls = "", type;
        if (Has("architectures"))
        {
            var a = root.GetProperty("architectures");
            if (a.ValueKind != JsonValueKind.Array) throw json.Error("architectures", $"expected an array of class names, found {JsonSource.Describe(a)}");
            var names = a.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : x.GetRawText()).ToArray();
            var hit = Known.FirstOrDefault(k => names.Contains(k.Class));
            if (hit.Class == null)
                throw json.Error("architectures", $"expected one of {string.Join(", ", Known.Select(k => k.Class))}, found [{string.Join(", ", names)}]");
            (cls, type) = hit;
        }
        else
        {
            string mt = Str(json, "model_type") ?? throw json.Error("model_type", "expected 'architectures' or 'model_type', found neither");
            type = Known.FirstOrDefault(k => k.ModelType == mt).ModelType
                ?? throw json.Error("model_type", $"expected one of {string.Join(", ", Known.Select(k => k.ModelType))}, found '{mt}'");
        }

        string? act = Str(json, "hidden_act");
        if (act is not (null or "silu"))
            throw json.Error("hidden_act", $"expected 'silu' (SwiGLU), found '{act}'");
        if (type == "llama" && (Bool(json, "mlp_bias") ?? false))
            throw json.Error("mlp_bias", "expected false: MLP biases are not supported, found true");
        if (type == "llama" && (Bool(json, "attention_bias") ?? false))
            throw json.Error("attention_bias", "expected false: llama attention biases include o_proj, which is not supported, found true");

        int dim = PositiveInt(json, "hidden_size");
        int layers = PositiveInt(json, "num_hidden_layers");
        int heads = PositiveInt(json, "num_attention_heads");
        int kvHeads = Has("num_key_value_heads") ? PositiveInt(json, "num_key_value_heads") : heads;
        if (heads % kvHeads != 0)
            throw json.Error("num_key_value_heads", $"expected a divisor of num_attention_heads {heads}, found {kvHeads}");
        int headDim;
        if (Has("head_dim")) headDim = PositiveInt(json, "head_dim");
        else if (dim % heads == 0) headDim = dim / heads;
        else throw json.Error("num_attention_heads", $"expected a divisor of hidden_size {dim} (no head_dim given), found {heads}");
        if (headDim % 2 != 0) throw json.Error(Has("head_dim") ? "head_dim" : "num_attention_heads", $"expected an even head dimension for RoPE, found {headDim}");

        // transformers v5 moves rope_theta and the scaling into rope_parameters; v4 has rope_theta + rope_scaling.
        string ropeKey = Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
        double theta = Float(json, "rope_theta") ?? 10000.0;
        float scale = 1f;
        float[]? freqFactors = null;
        if (Has(ropeKey))
        {
            var rs = root.GetProperty(ropeKey);
            if (rs.ValueKind != JsonValueKind.Object) throw json.Error(ropeKey, $"expected an object or null, found {JsonSource.Describe(rs)}");
            string? kind = (rs.TryGetProperty("rope_type", out var rt) || rs.TryGetProperty("type", out rt)) && rt.ValueKind == JsonValueKind.String ? rt.GetString() : null;
            if (rs.TryGetProperty("rope_theta", out var th))
                theta = th.ValueKind == JsonValueKind.Number ? th.GetDouble() : throw json.Error(ropeKey, $"expected a number rope_theta, found {JsonSource.Describe(th)}");
            if (kind == "linear")
            {
                if (!rs.TryGetProperty("factor", out var f) || f.ValueKind != JsonValueKind.Number || !(f.GetDouble() > 0))
                    throw json.Error(ropeKey, $"expected a positive number 'factor' for linear scaling, found {(f.ValueKind == JsonValueKind.Undefined ? "none" : JsonSource.Describe(f))}");
                scale = (float)f.GetDouble();
            }
            else if (kind == "llama3")
            {
                // Llama 3.1: per-pair frequency factors, as llama.cpp's converter writes them to rope_freqs.weight.
                double Num(string key) => rs.TryGetProperty(key, out var e) && e.ValueKind == JsonValueKind.Number ? e.GetDouble()
                    : throw json.Error(ropeKey, $"expected a number '{key}' for llama3 scaling, found {(e.ValueKind == JsonValueKind.Undefined ? "none" : JsonSource.Describe(e))}");
                try
                {
                    freqFactors = RopeFrequencyFactors.Llama3(headDim, (float)theta, (float)Num("factor"), (float)Num("low_freq_factor"),
                        (float)Num("high_freq_factor"), (int)Num("original_max_position_embeddings"));
                }
                catch (ArgumentException e) { throw json.Error(ropeKey, e.Message); }
            }
            else if (kind is not (null or "default"))
                throw json.Error(ropeKey, $"expected no scaling or type 'linear' or 'llama3', found type '{kind}' (not supported)");
        }
        if (!(theta > 0) || !double.IsFinite(theta)) throw json.Error("rope_theta", $"expected a positive number, found {theta}");
        double eps = Float(json, "rms_norm_eps") ?? 1e-6;
        if (!(eps > 0) || !double.IsFinite(eps)) throw json.Error("rms_norm_eps", $"expected a positive number, found {eps}");

        var model = new ModelConfig
        {
            Architecture = type,
            Dim = dim,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            FfnDim = PositiveInt(json, "intermediate_size"),
            VocabSize = PositiveInt(json, "vocab_size"),
            NormEps = (float)eps,
            RopeBase = (float)theta,
            RopeScale = scale,
            RopeDims = headDim,
            RopeStyle = RopeStyle.Neox,
            RopeFreqFactors = freqFactors,
            ContextLength = Has("max_position_embeddings") ? PositiveInt(json, "max_position_embeddings")
                : type switch { "mistral" => 4096 * 32, "qwen2" => 32768, _ => 2048 },
        };
        model.Validate(json.Path);

        bool sliding = type == "mistral" || (Bool(json, "use_sliding_window") ?? false);
        int[] eosIds = [];
        if (Has("eos_token_id"))
        {
            var e = root.GetProperty("eos_token_id");
            eosIds = e.ValueKind == JsonValueKind.Array
                ? e.EnumerateArray().Select(x => x.TryGetInt32(out var i) ? i : throw json.Error("eos_token_id", $"expected integers, found {JsonSource.Describe(x)}")).ToArray()
                : [Int(json, "eos_token_id")];
        }
        return new HfConfig
        {
            Model = model,
            ArchitectureClass = cls,
            TieWordEmbeddings = Bool(json, "tie_word_embeddings") ?? false,
            QkvBias = type == "qwen2",
            SlidingWindow = sliding && Has("sliding_window") ? PositiveInt(json, "sliding_window") : null,
            BosTokenId = Has("bos_token_id") ? Int(json, "bos_token_id") : null,
            EosTokenIds = eosIds,
            TorchDtype = Str(json, "torch_dtype") ?? Str(json, "dtype"),
        };
    }

    private static JsonElement? Value(JsonSource json, string key) =>
        json.Root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static int Int(JsonSource json, string key)
    {
        var v = Value(json, key) ?? throw json.Error(key, "expected an integer, found none (required key is missing)");
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
            throw json.Error(key, $"expected an integer, found {JsonSource.Describe(v)}");
        return i;
    }

    private static int PositiveInt(JsonSource json, string key)
    {
        int i = Int(json, key);
        return i > 0 ? i : throw json.Error(key, $"expected a positive integer, found {i}");
    }

    private static double? Float(JsonSource json, string key)
    {
        if (Value(json, key) is not { } v) return null;
        return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw json.Error(key, $"expected a number, found {JsonSource.Describe(v)}");
    }

    private static bool? Bool(JsonSource json, string key)
    {
        if (Value(json, key) is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw json.Error(key, $"expected true or false, found {JsonSource.Describe(v)}"),
        };
    }

    private static string? Str(JsonSource json, string key)
    {
        if (Value(json, key) is not { } v) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw json.Error(key, $"expected a string, found {JsonSource.Describe(v)}");
    }
}
