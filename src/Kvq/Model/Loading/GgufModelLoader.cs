using System.Security.Cryptography;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Tensors;

namespace Kvq.Model.Loading;

/// <summary>
/// Maps a GGUF file of architecture llama (also Mixtral) / mistral / qwen2 / qwen3 / phi3 / qwen2moe / qwen3moe / gemma2 /
/// gemma3 onto <see cref="ModelWeights"/>. Matrices point into the
/// memory map (quantized ones stay quantized); norms and biases are small and decoded to f32.
/// </summary>
public static unsafe class GgufModelLoader
{
    public static readonly string[] Architectures = ["llama", "mistral", "qwen2", "qwen3", "phi3", "qwen2moe", "qwen3moe", "gemma2", "gemma3"];

    /// <summary>Architectures whose output matrix llama.cpp takes from token_embd.weight when output.weight is absent
    /// (tied embeddings); for any other, a missing output.weight is an error.</summary>
    public static readonly string[] TiedOutputArchitectures = ["llama", "mistral", "qwen2", "qwen3", "qwen3moe"];

    /// <summary>Architectures whose blocks norm each query and key head before RoPE (attn_q_norm / attn_k_norm).</summary>
    public static readonly string[] QkNormArchitectures = ["qwen3", "qwen3moe", "gemma3"];

    public static ModelWeights Load(string path)
    {
        var gguf = GgufFile.Open(path);
        try { return Load(gguf); }
        catch { gguf.Dispose(); throw; }
    }

    /// <summary>Builds the weights over an open file; the weights take ownership of it.</summary>
    public static ModelWeights Load(GgufFile gguf)
    {
        var config = ReadConfig(gguf);
        var used = new HashSet<string>(StringComparer.Ordinal);
        WeightMatrix Matrix(string name, int rows, int cols) { used.Add(name); return GgufModelLoader.Matrix(gguf, name, rows, cols); }
        float[] Vector(string name, int length, bool isNorm = false) { used.Add(name); return GgufModelLoader.Vector(gguf, name, length, isNorm); }
        if (config.RopeFreqFactors != null) used.Add(RopeFreqsTensor);
        var embd = Matrix("token_embd.weight", config.VocabSize, config.Dim);
        var layers = new LayerWeights[config.Layers];
        var parts = new GgufLayerParts(gguf, config, Matrix, (name, n) => Vector(name, n), name => used.Add(name));
        for (int i = 0; i < config.Layers; i++)
        {
            string p = $"blk.{i}.";
            bool bias = gguf.HasTensor(p + "attn_q.bias");
            var (wq, wk, wv) = parts.Attention(p);
            var (gate, up, down, experts) = parts.FeedForward(p);
            layers[i] = new LayerWeights
            {
                AttnNorm = Vector(p + "attn_norm.weight", config.Dim, isNorm: true),
                Wq = wq,
                Wk = wk,
                Wv = wv,
                Wo = Matrix(p + "attn_output.weight", config.Dim, config.QDim),
                Bq = bias ? Vector(p + "attn_q.bias", config.QDim) : null,
                Bk = bias ? Vector(p + "attn_k.bias", config.KvDim) : null,
                Bv = bias ? Vector(p + "attn_v.bias", config.KvDim) : null,
                QNorm = config.QkNorm ? Vector(p + "attn_q_norm.weight", config.HeadDim, isNorm: true) : null,
                KNorm = config.QkNorm ? Vector(p + "attn_k_norm.weight", config.HeadDim, isNorm: true) : null,
                FfnNorm = Vector(p + "ffn_norm.weight", config.Dim, isNorm: true),
                AttnPostNorm = config.Extras?.PostNorms == true ? Vector(p + "post_attention_norm.weight", config.Dim, isNorm: true) : null,
                FfnPostNorm = config.Extras?.PostNorms == true ? Vector(p + "post_ffw_norm.weight", config.Dim, isNorm: true) : null,
                WGate = gate,
                WUp = up,
                WDown = down,
                Experts = experts,
            };
        }
        var notes = new List<string>();
        WeightMatrix output;
        // Gemma always ties its output to token_embd (llama.cpp does not look for output.weight; one in the file is left
        // over and refused by the inventory check below).
        if (GgufGemma.IsGemma(config.Architecture)) output = embd;
        else if (gguf.HasTensor("output.weight")) output = Matrix("output.weight", config.VocabSize, config.Dim);
        else if (Array.IndexOf(TiedOutputArchitectures, config.Architecture) >= 0)
        {
            output = embd;
            notes.Add($"{Path.GetFileName(gguf.Path)} has no output.weight: the output is tied to token_embd.weight " +
                      $"(tied embeddings, as llama.cpp does for {config.Architecture})");
        }
        else throw new ModelFormatException(gguf.Path, "tensor 'output.weight'", 0,
            $"missing, and a {config.Architecture} model does not tie its output to the embeddings");
        var outputNorm = Vector("output_norm.weight", config.Dim, isNorm: true);
        CheckInventory(gguf, used, config.Architecture);
        return new ModelWeights
        {
            Config = config,
            TokenEmbedding = embd,
            Layers = layers,
            OutputNorm = outputNorm,
            Output = output,
            Owner = gguf,
            Fingerprint = Fingerprint(gguf),
            SourcePath = gguf.Path,
            Notes = notes,
        };
    }

    /// <summary>Every tensor in the file must be one the model uses: like llama.cpp, which counts the tensors it created
    /// and refuses a file with others, an unknown tensor is an error naming it (it may be a part of the model this
    /// loader would silently leave out, such as Llama 3.1's rope_freqs.weight).</summary>
    private static void CheckInventory(GgufFile gguf, HashSet<string> used, string arch)
    {
        var extra = gguf.Tensors.Where(t => !used.Contains(t.Name)).ToList();
        if (extra.Count == 0) return;
        var first = extra[0];
        string names = string.Join(", ", extra.Take(5).Select(t => $"'{t.Name}'")) + (extra.Count > 5 ? $" and {extra.Count - 5} more" : "");
        string hint = "";
        throw new ModelFormatException(gguf.Path, $"tensor '{first.Name}'", first.HeaderOffset,
            $"{extra.Count} tensor(s) not part of a {arch} model as kvq reads it: {names}{hint}; llama.cpp refuses such a file too " +
            $"(it expects {used.Count} tensors, the file has {gguf.Tensors.Count})");
    }

    public static ModelConfig ReadConfig(GgufFile gguf)
    {
        string arch = gguf.TryGetString("general.architecture")
            ?? throw new ModelFormatException(gguf.Path, "metadata 'general.architecture'", 0, "required key is missing");
        if (Array.IndexOf(Architectures, arch) < 0)
            throw new ModelFormatException(gguf.Path, "metadata 'general.architecture'", 0,
                $"architecture '{arch}' is not supported (expected one of {string.Join(", ", Architectures)})");
        int I(string key) => checked((int)gguf.GetInt($"{arch}.{key}"));
        int dim = I("embedding_length");
        int heads = I("attention.head_count");
        int kvHeads = (int)(gguf.TryGetInt($"{arch}.attention.head_count_kv") ?? heads);
        int headDim = (int)(gguf.TryGetInt($"{arch}.attention.key_length") ?? (heads > 0 ? dim / heads : 0));
        var embd = gguf.Tensor("token_embd.weight");
        int vocab = (int)(gguf.TryGetInt($"{arch}.vocab_size") ?? (embd.Dims.Length == 2 ? embd.Dims[1] : 0));
        int ropeDims = (int)(gguf.TryGetInt($"{arch}.rope.dimension_count") ?? headDim);
        int context = (int)(gguf.TryGetInt($"{arch}.context_length") ?? 2048);
        float scale = 1f;
        RopeYarn? yarn = null;
        string? scalingType = gguf.TryGetString($"{arch}.rope.scaling.type");
        if (scalingType is "linear")
            scale = (float)(gguf.TryGetFloat($"{arch}.rope.scaling.factor") ?? 1.0);
        else if (scalingType is "yarn")
            yarn = ReadYarn(gguf, arch, context);
        else if (scalingType is not (null or "none"))
            throw new ModelFormatException(gguf.Path, $"metadata '{arch}.rope.scaling.type'", 0,
                $"rope scaling '{scalingType}' is not supported (expected none, linear or yarn)");
        bool qkNorm = gguf.HasTensor("blk.0.attn_q_norm.weight");
        if (Array.IndexOf(QkNormArchitectures, arch) >= 0 && !qkNorm)
            throw new ModelFormatException(gguf.Path, "tensor 'blk.0.attn_q_norm.weight'", 0, $"missing: a {arch} model norms its queries and keys (QK-norm)");
        var config = new ModelConfig
        {
            Architecture = arch,
            Dim = dim,
            Layers = I("block_count"),
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            FfnDim = I("feed_forward_length"),
            VocabSize = vocab,
            NormEps = (float)(gguf.TryGetFloat($"{arch}.attention.layer_norm_rms_epsilon") ?? 1e-5),
            RopeBase = (float)(gguf.TryGetFloat($"{arch}.rope.freq_base") ?? 10000.0),
            RopeScale = scale,
            RopeDims = ropeDims,
            // llama.cpp: llama/mistral rotate adjacent pairs (Q/K rows were permuted at conversion); qwen2/3, qwen2moe
            // and phi3 use neox.
            RopeStyle = arch is "qwen2" or "qwen3" or "qwen2moe" or "qwen3moe" or "phi3" or "gemma2" or "gemma3" ? RopeStyle.Neox : RopeStyle.Normal,
            RopeFreqFactors = gguf.HasTensor(RopeFreqsTensor) ? Vector(gguf, RopeFreqsTensor, ropeDims / 2) : null,
            RopeYarn = yarn,
            QkNorm = qkNorm,
            // llama.cpp ignores phi3's sliding_window (Phi-3 SWA is disabled there), so Kvq does too, to stay comparable.
            SlidingWindow = arch == "phi3" ? 0 : (int)(gguf.TryGetInt($"{arch}.attention.sliding_window") ?? 0),
            ContextLength = context,
            Experts = GgufLayerParts.ReadExperts(gguf, arch, I("feed_forward_length")),
        };
        if (GgufGemma.IsGemma(arch)) config = GgufGemma.Apply(gguf, arch, config);
        config.Validate(gguf.Path);
        return config;
    }

    /// <summary>Llama 3.1's RoPE frequency factors, one per rotated pair (llama.cpp divides each pair's angle by it).</summary>
    public const string RopeFreqsTensor = "rope_freqs.weight";

    /// <summary>
    /// YaRN parameters as llama.cpp's context derives them from the file: freq_scale = 1 / rope.scaling.factor,
    /// ext_factor 1 (unless rope.scaling.yarn_ext_factor says otherwise), beta fast/slow 32/1 unless given, and the
    /// attention factor: get_mscale(factor) (or its ratio with yarn_log_multiplier's mscale), divided by the
    /// 1 + 0.1 ln factor that ggml multiplies in again, times rope.scaling.attn_factor.
    /// </summary>
    private static RopeYarn ReadYarn(GgufFile gguf, string arch, int context)
    {
        string K(string key) => $"{arch}.rope.scaling.{key}";
        float factor = (float)(gguf.TryGetFloat(K("factor")) ?? 1.0);
        if (!(factor >= 1f) || !float.IsFinite(factor))
            throw new ModelFormatException(gguf.Path, $"metadata '{K("factor")}'", 0, $"YaRN factor {factor} must be >= 1");
        float ext = (float)(gguf.TryGetFloat(K("yarn_ext_factor")) ?? -1.0);
        if (ext < 0) ext = 1f;
        float logMul = (float)(gguf.TryGetFloat(K("yarn_log_multiplier")) ?? 0.0);
        float attn = 1f;
        if (ext != 0)
        {
            static float MScale(float scale, float m) => scale <= 1f ? 1f : 0.1f * m * MathF.Log(scale) + 1f;
            attn = logMul != 0 ? MScale(factor, 1f) / MScale(factor, logMul) : MScale(factor, 1f);
            attn *= 1f / (1f + 0.1f * MathF.Log(factor));
        }
        attn *= (float)(gguf.TryGetFloat(K("attn_factor")) ?? 1.0);
        return new RopeYarn
        {
            Factor = factor,
            OriginalContext = (int)(gguf.TryGetInt(K("original_context_length")) ?? context),
            ExtFactor = ext,
            BetaFast = (float)(gguf.TryGetFloat(K("yarn_beta_fast")) ?? 32.0),
            BetaSlow = (float)(gguf.TryGetFloat(K("yarn_beta_slow")) ?? 1.0),
            AttnFactor = attn,
        };
    }

    private static WeightMatrix Matrix(GgufFile gguf, string name, int rows, int cols)
    {
        var t = gguf.Tensor(name);
        long r = t.Dims.Length > 1 ? t.Rows : 1;
        if (t.Dims.Length != 2 || t.Dims[0] != cols || r != rows)
            throw new ModelFormatException(gguf.Path, $"tensor '{name}'", t.HeaderOffset,
                $"expected shape [{cols}, {rows}], found {t.Shape}");
        return new WeightMatrix(name, rows, cols, t.Type, gguf.TensorPointer(t));
    }

    private static float[] Vector(GgufFile gguf, string name, int length, bool isNorm = false)
    {
        var t = gguf.Tensor(name);
        if (t.Elements != length)
            throw new ModelFormatException(gguf.Path, $"tensor '{name}'", t.HeaderOffset,
                $"expected {length} elements, found {t.Shape}");
        var v = new float[length];
        Tensors.Quant.RowKernels.Dequantize(t.Type, gguf.TensorPointer(t), v);
        for (int i = 0; i < v.Length; i++)
            if (!float.IsFinite(v[i]))
                throw new ModelFormatException(gguf.Path, $"tensor '{name}'", t.DataOffset + i * (t.ByteSize / length),
                    $"element {i} is {v[i]} (expected a finite {(isNorm ? "norm weight" : "value")})");
        return v;
    }

    /// <summary>
    /// Identity of the weights for calibration profiles: SHA-256 over the header (metadata + tensor table) and the
    /// first 4 KiB of every tensor's data. Cheap on multi-GB files, and any re-quantization or fine-tune changes it.
    /// </summary>
    public static string Fingerprint(GgufFile gguf)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using (var fs = new FileStream(gguf.Path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            var header = new byte[gguf.DataStart];
            fs.ReadExactly(header);
            sha.AppendData(header);
        }
        foreach (var t in gguf.Tensors)
            sha.AppendData(new ReadOnlySpan<byte>(gguf.TensorPointer(t), (int)Math.Min(4096, t.ByteSize)));
        return Convert.ToHexString(sha.GetHashAndReset().AsSpan(0, 16)).ToLowerInvariant();
    }
}
