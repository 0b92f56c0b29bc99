using System.Text.Json.Nodes;
using Kvq.Formats.Safetensors;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Tests.Formats.Safetensors;

public sealed class SafetensorsLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-st-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Theory]
    [InlineData("F32", false)]
    [InlineData("F16", false)]
    [InlineData("BF16", false)]
    [InlineData("F32", true)]
    [InlineData("BF16", true)]
    public void Loads_every_tensor_of_a_single_file_model(string dtype, bool tied)
    {
        var m = HfTestModel.Random(seed: 1, dtype, tied);
        m.Write(_dir);
        using var w = SafetensorsLoader.Load(_dir, out var info);

        m.AssertLoaded(w);
        Assert.Equal(tied, w.TiedOutput);
        var c = w.Config;
        Assert.Equal(("llama", 32, 2, 4, 2, 8, 48, 40), (c.Architecture, c.Dim, c.Layers, c.Heads, c.KvHeads, c.HeadDim, c.FfnDim, c.VocabSize));
        Assert.Equal(1e-5f, c.NormEps);
        Assert.Equal(500000f, c.RopeBase);
        Assert.Equal(1f, c.RopeScale);
        Assert.Equal(8, c.RopeDims);
        Assert.Equal(RopeStyle.Neox, c.RopeStyle);
        Assert.Equal(256, c.ContextLength);
        Assert.Null(w.Layers[0].Bq);
        Assert.Matches("^[0-9a-f]{32}$", w.Fingerprint);
        Assert.NotNull(w.Owner);
        Assert.Equal(Path.GetFullPath(_dir), w.SourcePath);
        Assert.Equal([Path.Combine(Path.GetFullPath(_dir), "model.safetensors")], info.WeightFiles);
        Assert.Null(info.IndexPath);
        Assert.Null(info.TokenizerPath);
        Assert.Equal("LlamaForCausalLM", info.Config.ArchitectureClass);
        Assert.Equal(1, info.Config.BosTokenId);
        Assert.Equal([2], info.Config.EosTokenIds);
    }

    [Fact]
    public void Matrices_point_into_the_map_without_copies()
    {
        var m = HfTestModel.Random(seed: 2, "BF16");
        m.Write(_dir);
        using var w = SafetensorsLoader.Load(_dir);
        using var f = SafetensorsFile.Open(Path.Combine(_dir, "model.safetensors"));
        unsafe
        {
            // Same file mapped twice: the distance of a tensor from the embedding is its distance in the file.
            var embd = f.Tensor("model.embed_tokens.weight");
            foreach (var (name, matrix) in new[] { ("model.layers.1.self_attn.k_proj.weight", w.Layers[1].Wk), ("lm_head.weight", w.Output) })
                Assert.Equal(f.Tensor(name).DataOffset - embd.DataOffset, (long)(matrix.Data - w.TokenEmbedding.Data));
        }
        Assert.Equal("pt", f.Metadata["format"]);
    }

    [Fact]
    public void Qwen2_loads_qkv_biases()
    {
        var m = HfTestModel.Random(seed: 3, "F16", tied: true, arch: "Qwen2ForCausalLM");
        m.Write(_dir);
        using var w = SafetensorsLoader.Load(_dir);
        m.AssertLoaded(w);
        Assert.Equal("qwen2", w.Config.Architecture);
        Assert.NotNull(w.Layers[1].Bk);
        Assert.Equal(m.Values("model.layers.1.self_attn.v_proj.bias"), w.Layers[1].Bv);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Loads_a_sharded_model(bool index)
    {
        var m = HfTestModel.Random(seed: 4, "F16", arch: "MistralForCausalLM");
        m.Write(_dir, shards: 3, index);
        using var w = SafetensorsLoader.Load(_dir, out var info);
        m.AssertLoaded(w);
        Assert.Equal("mistral", w.Config.Architecture);
        Assert.Equal(3, info.WeightFiles.Count);
        Assert.Equal(index, info.IndexPath != null);
        if (index)
            Assert.EndsWith("model-00003-of-00003.safetensors", info.WeightMap!["lm_head.weight"]);
    }

    [Fact]
    public void Reads_head_dim_rope_scaling_and_tokenizer_paths()
    {
        var m = HfTestModel.Random(seed: 5, "F32", headDim: 16, kvHeads: 4);   // q_proj is (64, 32): heads * head_dim != hidden
        m.Config["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 4.0 };
        m.Config.Remove("num_key_value_heads");                                // absent: as many as query heads
        m.Write(_dir);
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), "{}");
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), "{}");

        using var w = SafetensorsLoader.Load(_dir, out var info);
        m.AssertLoaded(w);
        var c = w.Config;
        Assert.Equal((16, 64, 64, 4, 4f), (c.HeadDim, c.QDim, c.KvDim, c.KvHeads, c.RopeScale));
        Assert.Equal(Path.Combine(Path.GetFullPath(_dir), "tokenizer.json"), info.TokenizerPath);
        Assert.Equal(Path.Combine(Path.GetFullPath(_dir), "tokenizer_config.json"), info.TokenizerConfigPath);
    }

    [Fact]
    public void Reads_llama3_rope_scaling_as_frequency_factors()
    {
        var m = HfTestModel.Random(seed: 6, "F32");
        m.Config["rope_theta"] = 500000.0;
        m.Config["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = 64,
        };
        m.Write(_dir);
        using var w = SafetensorsLoader.Load(_dir, out _);
        var c = w.Config;
        var f = Assert.IsType<float[]>(c.RopeFreqFactors);
        Assert.Equal(RopeFrequencyFactors.Llama3(c.HeadDim, 500000f, 8f, 1f, 4f, 64), f);
        Assert.Equal(1f, f[0]);     // short wavelengths keep their frequency
        Assert.Equal(8f, f[^1]);    // long ones are slowed by the factor
    }

    [Fact]
    public void Loads_every_safetensors_file_when_there_is_no_index()
    {
        var m = HfTestModel.Random(seed: 9, "F32");
        Directory.CreateDirectory(_dir);
        m.Write(_dir);
        File.Delete(Path.Combine(_dir, "model.safetensors"));
        var all = m.ToTestTensors().ToList();
        SafetensorsTestWriter.Write(Path.Combine(_dir, "b.safetensors"), all.Where(t => t.Name.Contains("mlp")));
        SafetensorsTestWriter.Write(Path.Combine(_dir, "a.safetensors"), all.Where(t => !t.Name.Contains("mlp")));
        using var w = SafetensorsLoader.Load(_dir, out var info);
        m.AssertLoaded(w);
        Assert.Equal(["a.safetensors", "b.safetensors"], info.WeightFiles.Select(Path.GetFileName));
    }

    [Fact]
    public void Reads_transformers_v5_rope_parameters()
    {
        var m = HfTestModel.Random(seed: 7);
        m.Config.Remove("rope_theta");
        m.Config["rope_parameters"] = new JsonObject { ["rope_type"] = "linear", ["rope_theta"] = 1234.0, ["factor"] = 2.0 };
        m.Write(_dir);
        using var w = SafetensorsLoader.Load(_dir);
        Assert.Equal((1234f, 2f), (w.Config.RopeBase, w.Config.RopeScale));
    }

    [Fact]
    public void Fingerprint_is_stable_and_follows_the_weights()
    {
        var m = HfTestModel.Random(seed: 8, "BF16");
        m.Write(_dir);
        string a, b, c;
        using (var w = SafetensorsLoader.Load(_dir)) a = w.Fingerprint;
        using (var w = SafetensorsLoader.Load(_dir)) b = w.Fingerprint;
        var path = Path.Combine(_dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        bytes[^3] ^= 1;   // one bit of lm_head
        File.WriteAllBytes(path, bytes);
        using (var w = SafetensorsLoader.Load(_dir)) c = w.Fingerprint;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }
}
