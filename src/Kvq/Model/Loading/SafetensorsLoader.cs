using System.Text.Json;
using Kvq.Formats;
using Kvq.Formats.Llama2c;
using Kvq.Formats.Safetensors;
using Kvq.Tensors;
using Kvq.Tokenizers;
using Kvq.Tokenizers.HuggingFace;
using static Kvq.Formats.Safetensors.HfFolder;

namespace Kvq.Model.Loading;

/// <summary>
/// Maps a Hugging Face model folder (config.json + model.safetensors, or shards listed by
/// model.safetensors.index.json) onto <see cref="ModelWeights"/>. F32/F16/BF16 matrices point into the memory maps
/// (no copy, no conversion); norms and biases are small and decoded to f32.
/// Q/K rows stay as stored and the config says <see cref="RopeStyle.Neox"/>: HF rotates halves (i, i + d/2) of each
/// head, which gives the same attention scores as GGUF's row-permuted Q/K with adjacent-pair rotation.
/// </summary>
public static unsafe class SafetensorsLoader
{
    /// <summary>
    /// Parses config.json and finds the weight files: model.safetensors if present (as transformers does), else the
    /// shards named by model.safetensors.index.json, else every *.safetensors file in the folder.
    /// </summary>
    public static SafetensorsModelInfo ReadInfo(string dir)
    {
        dir = Path.GetFullPath(dir);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model folder not found: {dir}");
        string configPath = Path.Combine(dir, ConfigFileName);
        if (!File.Exists(configPath))
            throw new ModelFormatException(configPath, ConfigFileName, 0, "expected a config.json in the model folder, found none");
        var config = HfConfig.Read(configPath);

        string? indexPath = null;
        Dictionary<string, string>? weightMap = null;
        List<string> files;
        string single = Path.Combine(dir, SingleFileName);
        if (File.Exists(single)) files = [single];
        else if (File.Exists(Path.Combine(dir, IndexFileName)))
        {
            indexPath = Path.Combine(dir, IndexFileName);
            weightMap = ReadIndex(indexPath, dir);
            files = weightMap.Values.Distinct(StringComparer.Ordinal).ToList();
        }
        else files = Directory.GetFiles(dir, "*.safetensors").ToList();
        if (files.Count == 0)
            throw new ModelFormatException(dir, "weights", 0,
                $"expected {SingleFileName}, shards listed by {IndexFileName}, or other *.safetensors files; found none");
        files.Sort(StringComparer.Ordinal);

        string? Optional(string name) => File.Exists(Path.Combine(dir, name)) ? Path.Combine(dir, name) : null;
        return new SafetensorsModelInfo
        {
            Directory = dir,
            ConfigPath = configPath,
            Config = config,
            IndexPath = indexPath,
            WeightFiles = files,
            WeightMap = weightMap,
            TokenizerPath = Optional(TokenizerFileName),
            TokenizerConfigPath = Optional(TokenizerConfigFileName),
        };
    }

    /// <summary>The tokenizer of a model folder found by <see cref="ReadInfo"/>: its tokenizer.json
    /// (or <paramref name="tokenizerJsonPath"/>), tokenizer_config.json, and config.json's vocab_size and token ids.</summary>
    /// <exception cref="ModelFormatException">no tokenizer.json, or one of the files is malformed or unsupported.</exception>
    public static ITokenizer LoadTokenizer(SafetensorsModelInfo info, string? tokenizerJsonPath = null)
    {
        string path = tokenizerJsonPath ?? info.TokenizerPath ?? throw new ModelFormatException(
            Path.Combine(info.Directory, TokenizerFileName), TokenizerFileName, 0,
            "expected a tokenizer.json (Hugging Face tokenizers format) in the model folder, found none");
        return HfTokenizerLoader.Load(path, info.TokenizerConfigPath, info.Config.Tokens, info.ConfigPath);
    }

    private static Dictionary<string, string> ReadIndex(string indexPath, string dir)
    {
        using var json = JsonSource.Read(indexPath, IndexFileName);
        if (!json.Root.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw json.Error("weight_map", $"expected an object of tensor name -> shard file, found {(map.ValueKind == JsonValueKind.Undefined ? "none" : JsonSource.Describe(map))}");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var e in map.EnumerateObject())
        {
            string key = "weight_map/" + e.Name;
            if (e.Value.ValueKind != JsonValueKind.String)
                throw json.Error(key, $"expected a shard file name, found {JsonSource.Describe(e.Value)}");
            string file = e.Value.GetString()!;
            // Shards sit beside the index: a name with a directory part could point anywhere on disk.
            if (file.Length == 0 || Path.GetFileName(file) != file || file is "." or "..")
                throw json.Error(key, $"expected a plain file name in the model folder, found '{file}'");
            string full = Path.Combine(dir, file);
            if (!File.Exists(full))
                throw json.Error(key, $"expected shard '{file}' in {dir}, found no such file");
            result[e.Name] = full;
        }
        if (result.Count == 0) throw json.Error("weight_map", "expected at least one tensor, found an empty map");
        return result;
    }

    public static ModelWeights Load(string dir) => Load(dir, out _);

    public static ModelWeights Load(string dir, out SafetensorsModelInfo info)
    {
        info = ReadInfo(dir);
        var files = new SafetensorsFileSet();
        try
        {
            foreach (var path in info.WeightFiles) files.Add(SafetensorsFile.Open(path));
            return Build(info, files);
        }
        catch
        {
            files.Dispose();
            throw;
        }
    }

    private static ModelWeights Build(SafetensorsModelInfo info, SafetensorsFileSet files)
    {
        var config = info.Config.Model;
        var where = Locate(info, files);

        (SafetensorsFile File, SafetensorsTensorInfo Tensor) Find(string name)
        {
            if (where.TryGetValue(name, out var hit)) return hit;
            string source = info.IndexPath ?? (info.WeightFiles.Count == 1 ? info.WeightFiles[0] : info.Directory);
            throw new ModelFormatException(source, $"tensor '{name}'", 0,
                $"expected this tensor for {info.Config.Model.Architecture} (config.json), found it in none of " +
                string.Join(", ", info.WeightFiles.Select(Path.GetFileName)));
        }

        ModelFormatException Bad(SafetensorsFile f, SafetensorsTensorInfo t, string msg) => new(f.Path, $"tensor '{t.Name}'", t.HeaderOffset, msg);

        WeightMatrix Matrix(string name, int rows, int cols)
        {
            var (f, t) = Find(name);
            var type = SafetensorsDType.ToGgml(t.DType) ?? throw Bad(f, t, $"expected dtype {SafetensorsDType.Supported}, found {t.DType}");
            if (t.Shape.Length != 2 || t.Shape[0] != rows || t.Shape[1] != cols)
                throw Bad(f, t, $"expected shape [{rows}, {cols}] from config.json, found {t.ShapeText}");
            return new WeightMatrix(name, rows, cols, type, f.TensorPointer(t), files);
        }

        float[] Vector(string name, int length, bool isNorm)
        {
            var (f, t) = Find(name);
            if (t.Shape.Length != 1 || t.Shape[0] != length)
                throw Bad(f, t, $"expected shape [{length}] from config.json, found {t.ShapeText}");
            var v = f.ReadFloats(t);
            for (int i = 0; i < v.Length; i++)
                if (!float.IsFinite(v[i]))
                    throw new ModelFormatException(f.Path, $"tensor '{name}'", t.DataOffset + i * (t.ByteSize / length),
                        $"expected finite {(isNorm ? "norm weights" : "values")}, found {v[i]} at element {i}");
            return v;
        }

        bool bias = info.Config.QkvBias;
        var layers = new LayerWeights[config.Layers];
        for (int i = 0; i < layers.Length; i++)
        {
            string p = $"model.layers.{i}.";
            layers[i] = new LayerWeights
            {
                AttnNorm = Vector(p + "input_layernorm.weight", config.Dim, isNorm: true),
                Wq = Matrix(p + "self_attn.q_proj.weight", config.QDim, config.Dim),
                Wk = Matrix(p + "self_attn.k_proj.weight", config.KvDim, config.Dim),
                Wv = Matrix(p + "self_attn.v_proj.weight", config.KvDim, config.Dim),
                Wo = Matrix(p + "self_attn.o_proj.weight", config.Dim, config.QDim),
                Bq = bias ? Vector(p + "self_attn.q_proj.bias", config.QDim, isNorm: false) : null,
                Bk = bias ? Vector(p + "self_attn.k_proj.bias", config.KvDim, isNorm: false) : null,
                Bv = bias ? Vector(p + "self_attn.v_proj.bias", config.KvDim, isNorm: false) : null,
                FfnNorm = Vector(p + "post_attention_layernorm.weight", config.Dim, isNorm: true),
                WGate = Matrix(p + "mlp.gate_proj.weight", config.FfnDim, config.Dim),
                WUp = Matrix(p + "mlp.up_proj.weight", config.FfnDim, config.Dim),
                WDown = Matrix(p + "mlp.down_proj.weight", config.Dim, config.FfnDim),
            };
        }
        var embedding = Matrix("model.embed_tokens.weight", config.VocabSize, config.Dim);
        return new ModelWeights
        {
            Config = config,
            TokenEmbedding = embedding,
            Layers = layers,
            OutputNorm = Vector("model.norm.weight", config.Dim, isNorm: true),
            // Tied: transformers ties lm_head to the embedding and ignores a stored lm_head.weight.
            Output = info.Config.TieWordEmbeddings ? embedding : Matrix("lm_head.weight", config.VocabSize, config.Dim),
            Owner = files,
            Fingerprint = Fingerprint(files),
            SourcePath = info.Directory,
        };
    }

    /// <summary>Tensor name -> the file holding it, checked against the index and against config.json's layer count.</summary>
    private static Dictionary<string, (SafetensorsFile, SafetensorsTensorInfo)> Locate(SafetensorsModelInfo info, SafetensorsFileSet files)
    {
        var where = new Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Tensor)>(StringComparer.Ordinal);
        foreach (var f in files.Files)
            foreach (var t in f.Tensors)
            {
                if (where.TryGetValue(t.Name, out var first))
                    throw new ModelFormatException(f.Path, $"tensor '{t.Name}'", t.HeaderOffset,
                        $"expected each tensor in one file, found it in {Path.GetFileName(first.File.Path)} too");
                where[t.Name] = (f, t);
            }
        if (info.WeightMap != null)
        {
            foreach (var (name, shard) in info.WeightMap)
            {
                var file = files.Files.First(f => f.Path == shard);
                if (!file.HasTensor(name))
                    throw new ModelFormatException(shard, $"tensor '{name}'", 8,
                        $"expected this tensor here ({IndexFileName} lists it in {Path.GetFileName(shard)}), found it missing" +
                        (where.TryGetValue(name, out var other) ? $" (it is in {Path.GetFileName(other.File.Path)})" : ""));
            }
        }
        int layers = info.Config.Model.Layers;
        foreach (var (name, (f, t)) in where)
        {
            if (!name.StartsWith("model.layers.", StringComparison.Ordinal)) continue;
            var rest = name.AsSpan("model.layers.".Length);
            int dot = rest.IndexOf('.');
            if (dot > 0 && int.TryParse(rest[..dot], out int layer) && layer >= layers)
                throw new ModelFormatException(f.Path, $"tensor '{name}'", t.HeaderOffset,
                    $"expected layers 0..{layers - 1} (num_hidden_layers in config.json), found a tensor of layer {layer}");
        }
        return where;
    }

    /// <summary>See <see cref="WeightsFingerprint"/>: each weight file by name, whole up to 1 GiB, sampled above (config.json is not part of it).</summary>
    private static string Fingerprint(SafetensorsFileSet files)
    {
        using var h = WeightsFingerprint.Begin("safetensors");
        foreach (var f in files.Files) WeightsFingerprint.AppendFile(h, f.Map, Path.GetFileName(f.Path));
        return WeightsFingerprint.Finish(h);
    }
}
