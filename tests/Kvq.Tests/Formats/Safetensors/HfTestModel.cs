using System.Text.Json;
using System.Text.Json.Nodes;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Tests.Formats.Safetensors;

/// <summary>A small random Hugging Face model (config.json + tensors) that tests write to a folder and load back.</summary>
internal sealed class HfTestModel
{
    public required JsonObject Config { get; init; }
    public required string DType { get; init; }
    /// <summary>Tensors in write order, with the values a reader must get back (already rounded to the dtype).</summary>
    public required List<(string Name, long[] Shape, float[] Values)> Tensors { get; init; }

    public float[] Values(string name) => Tensors.First(t => t.Name == name).Values;

    public static HfTestModel Random(int seed, string dtype = "F32", bool tied = false, string arch = "LlamaForCausalLM",
        int? headDim = null, int kvHeads = 2)
    {
        const int dim = 32, layers = 2, heads = 4, ffn = 48, vocab = 40;
        int hd = headDim ?? dim / heads;
        string modelType = arch switch { "MistralForCausalLM" => "mistral", "Qwen2ForCausalLM" => "qwen2", _ => "llama" };
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(arch),
            ["model_type"] = modelType,
            ["hidden_size"] = dim,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = kvHeads,
            ["intermediate_size"] = ffn,
            ["vocab_size"] = vocab,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = 500000.0,
            ["max_position_embeddings"] = 256,
            ["tie_word_embeddings"] = tied,
            ["hidden_act"] = "silu",
            ["torch_dtype"] = dtype switch { "F32" => "float32", "F16" => "float16", _ => "bfloat16" },
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
        };
        if (headDim != null) config["head_dim"] = hd;

        var rng = new Random(seed);
        var list = new List<(string, long[], float[])>();
        void Add(string name, float center, params long[] shape)
        {
            long n = 1;
            foreach (var d in shape) n *= d;
            var v = new float[n];
            for (int i = 0; i < v.Length; i++) v[i] = center + (rng.NextSingle() * 2 - 1) * 0.5f;
            list.Add((name, shape, SafetensorsTestWriter.RoundTrip(dtype, v)));
        }
        Add("model.embed_tokens.weight", 0, vocab, dim);
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", 1, dim);
            Add(p + "self_attn.q_proj.weight", 0, heads * hd, dim);
            Add(p + "self_attn.k_proj.weight", 0, kvHeads * hd, dim);
            Add(p + "self_attn.v_proj.weight", 0, kvHeads * hd, dim);
            if (modelType == "qwen2")
            {
                Add(p + "self_attn.q_proj.bias", 0, heads * hd);
                Add(p + "self_attn.k_proj.bias", 0, kvHeads * hd);
                Add(p + "self_attn.v_proj.bias", 0, kvHeads * hd);
            }
            Add(p + "self_attn.o_proj.weight", 0, dim, heads * hd);
            Add(p + "post_attention_layernorm.weight", 1, dim);
            Add(p + "mlp.gate_proj.weight", 0, ffn, dim);
            Add(p + "mlp.up_proj.weight", 0, ffn, dim);
            Add(p + "mlp.down_proj.weight", 0, dim, ffn);
        }
        Add("model.norm.weight", 1, dim);
        if (!tied) Add("lm_head.weight", 0, vocab, dim);
        return new HfTestModel { Config = config, DType = dtype, Tensors = list };
    }

    public IEnumerable<TestTensor> ToTestTensors() =>
        Tensors.Select(t => TestTensor.FromFloats(t.Name, DType, t.Shape, t.Values));

    /// <summary>
    /// Writes config.json and the weights: one model.safetensors, or <paramref name="shards"/> files named as
    /// transformers names them, with model.safetensors.index.json unless <paramref name="index"/> is false.
    /// </summary>
    public void Write(string dir, int shards = 1, bool index = true)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), Config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var all = ToTestTensors().ToList();
        if (shards == 1)
        {
            SafetensorsTestWriter.Write(Path.Combine(dir, "model.safetensors"), all, new Dictionary<string, string> { ["format"] = "pt" });
            return;
        }
        var map = new JsonObject();
        long total = 0;
        int per = (all.Count + shards - 1) / shards;
        for (int s = 0; s < shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = all.Skip(s * per).Take(per).ToList();
            SafetensorsTestWriter.Write(Path.Combine(dir, file), part);
            foreach (var t in part) { map[t.Name] = file; total += t.Data.Length; }
        }
        if (index)
        {
            var idx = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = map };
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), idx.ToJsonString());
        }
    }

    /// <summary>Asserts that every tensor of this model reads back exactly from <paramref name="w"/>.</summary>
    public void AssertLoaded(ModelWeights w)
    {
        var expectedType = DType switch { "F32" => GgmlType.F32, "F16" => GgmlType.F16, _ => GgmlType.BF16 };
        foreach (var (name, shape, values) in Tensors)
        {
            object loaded = Lookup(w, name);
            if (loaded is WeightMatrix m)
            {
                Assert.Equal(expectedType, m.Type);
                Assert.Equal((int)shape[0], m.Rows);
                Assert.Equal((int)shape[1], m.Cols);
                var row = new float[m.Cols];
                for (int r = 0; r < m.Rows; r++)
                {
                    m.DequantizeRow(r, row);
                    Assert.True(values.AsSpan(r * m.Cols, m.Cols).SequenceEqual(row), $"{name} row {r} differs");
                }
            }
            else
            {
                Assert.Equal(values, (float[])loaded);
            }
        }
        Assert.Equal(Tensors.Any(t => t.Name == "lm_head.weight"), !w.TiedOutput);
    }

    private static object Lookup(ModelWeights w, string name)
    {
        if (name == "model.embed_tokens.weight") return w.TokenEmbedding;
        if (name == "model.norm.weight") return w.OutputNorm;
        if (name == "lm_head.weight") return w.Output;
        var parts = name.Split('.');   // model.layers.N.<group>.<proj>.<weight|bias>
        var l = w.Layers[int.Parse(parts[2])];
        string rest = string.Join('.', parts.Skip(3));
        return rest switch
        {
            "input_layernorm.weight" => l.AttnNorm,
            "post_attention_layernorm.weight" => l.FfnNorm,
            "self_attn.q_proj.weight" => l.Wq,
            "self_attn.k_proj.weight" => l.Wk,
            "self_attn.v_proj.weight" => l.Wv,
            "self_attn.o_proj.weight" => l.Wo,
            "self_attn.q_proj.bias" => l.Bq!,
            "self_attn.k_proj.bias" => l.Bk!,
            "self_attn.v_proj.bias" => l.Bv!,
            "mlp.gate_proj.weight" => l.WGate!,
            "mlp.up_proj.weight" => l.WUp!,
            "mlp.down_proj.weight" => l.WDown!,
            _ => throw new ArgumentException(name),
        };
    }
}
