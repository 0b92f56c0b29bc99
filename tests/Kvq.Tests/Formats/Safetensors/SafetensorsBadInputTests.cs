using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Kvq.Formats;
using Kvq.Model.Loading;

namespace Kvq.Tests.Formats.Safetensors;

/// <summary>Damaged Hugging Face folders: each must fail with a ModelFormatException naming the file, item and offset.</summary>
public sealed class SafetensorsBadInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-st-bad-").FullName;
    private string Weights => Path.Combine(_dir, "model.safetensors");
    private string Config => Path.Combine(_dir, "config.json");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ModelFormatException Fails(string expectedFile)
    {
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsLoader.Load(_dir).Dispose());
        Assert.Equal(Path.GetFileName(expectedFile), Path.GetFileName(e.FilePath));
        return e;
    }

    private HfTestModel WriteModel(Action<JsonObject>? patchConfig = null, Func<string, string>? patchHeader = null,
        Func<IEnumerable<TestTensor>, IEnumerable<TestTensor>>? tensors = null)
    {
        var m = HfTestModel.Random(seed: 11, "F16");
        patchConfig?.Invoke(m.Config);
        m.Write(_dir);
        if (patchHeader != null || tensors != null)
            SafetensorsTestWriter.Write(Weights, (tensors ?? (x => x))(m.ToTestTensors()), patchHeader: patchHeader);
        return m;
    }

    /// <summary>File offset of the first occurrence of <paramref name="text"/> in the safetensors header.</summary>
    private long HeaderOffsetOf(string text)
    {
        var bytes = File.ReadAllBytes(Weights);
        return 8 + Encoding.UTF8.GetString(bytes, 8, (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes)).IndexOf(text, StringComparison.Ordinal);
    }

    [Fact]
    public void Truncated_file_names_the_tensor_whose_data_is_cut()
    {
        WriteModel();
        var bytes = File.ReadAllBytes(Weights);
        File.WriteAllBytes(Weights, bytes[..^10]);
        var e = Fails(Weights);
        Assert.Equal("tensor 'lm_head.weight'", e.Item);            // written last
        Assert.Equal(HeaderOffsetOf("\"lm_head.weight\""), e.Offset);
        Assert.Contains($"past its end at {bytes.Length - 10} bytes", e.Message);
    }

    [Fact]
    public void Header_length_past_the_end_of_the_file()
    {
        WriteModel();
        var bytes = File.ReadAllBytes(Weights);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)bytes.Length);
        File.WriteAllBytes(Weights, bytes);
        var e = Fails(Weights);
        Assert.Equal("header length", e.Item);
        Assert.Equal(0, e.Offset);
        Assert.Contains($"found {bytes.Length}", e.Message);
    }

    [Fact]
    public void File_shorter_than_the_header_length()
    {
        WriteModel();
        File.WriteAllBytes(Weights, [1, 2, 3]);
        Assert.Equal("header length", Fails(Weights).Item);
    }

    [Fact]
    public void Bad_header_json_points_at_the_error()
    {
        WriteModel(patchHeader: h => h.Replace("\"data_offsets\":[0,", "\"data_offsets\":[0;"));
        var e = Fails(Weights);
        Assert.Equal("header JSON", e.Item);
        Assert.Equal(HeaderOffsetOf("[0;") + 2, e.Offset);
        Assert.Contains("expected valid JSON", e.Message);
    }

    [Fact]
    public void Unknown_dtype()
    {
        WriteModel(patchHeader: h => h.Replace("\"model.norm.weight\":{\"dtype\":\"F16\"", "\"model.norm.weight\":{\"dtype\":\"F12\""));
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.norm.weight'", e.Item);
        Assert.Equal(HeaderOffsetOf("\"model.norm.weight\""), e.Offset);
        Assert.Contains("unknown dtype 'F12'", e.Message);
    }

    [Fact]
    public void Known_but_unsupported_dtype_for_a_weight()
    {
        // I16 has the same element size as F16, so the header stays consistent: the loader must refuse the type.
        WriteModel(patchHeader: h => h.Replace("\"model.layers.1.mlp.up_proj.weight\":{\"dtype\":\"F16\"", "\"model.layers.1.mlp.up_proj.weight\":{\"dtype\":\"I16\""));
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.layers.1.mlp.up_proj.weight'", e.Item);
        Assert.Contains("expected dtype F32, F16 or BF16, found I16", e.Message);
    }

    [Fact]
    public void Shape_that_disagrees_with_the_config()
    {
        WriteModel(patchConfig: c => c["num_key_value_heads"] = 4);   // k_proj should now be [32, 32]
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.layers.0.self_attn.k_proj.weight'", e.Item);
        Assert.Equal(HeaderOffsetOf("\"model.layers.0.self_attn.k_proj.weight\""), e.Offset);
        Assert.Contains("expected shape [32, 32] from config.json, found [16, 32]", e.Message);
    }

    [Fact]
    public void Data_offsets_that_disagree_with_the_shape()
    {
        WriteModel(patchHeader: h => h.Replace("\"model.norm.weight\":{\"dtype\":\"F16\",\"shape\":[32]", "\"model.norm.weight\":{\"dtype\":\"F16\",\"shape\":[33]"));
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.norm.weight'", e.Item);
        Assert.Contains("expected data_offsets spanning 66 bytes (F16 [33])", e.Message);
    }

    [Fact]
    public void Data_offsets_outside_the_file()
    {
        WriteModel(patchHeader: h => h.Replace("\"data_offsets\":[0,", "\"data_offsets\":[1000000000,"));
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.embed_tokens.weight'", e.Item);
        Assert.Contains("begin <= end", e.Message);
        // A consistent but misplaced range: shift the embedding's whole range beyond the data.
        long size = 40 * 32 * 2;
        WriteModel(patchHeader: h => h.Replace($"\"data_offsets\":[0,{size}]", $"\"data_offsets\":[{1 << 20},{(1 << 20) + size}]"));
        e = Fails(Weights);
        Assert.Equal("tensor 'model.embed_tokens.weight'", e.Item);
        Assert.Contains("expected data inside the file", e.Message);
    }

    [Fact]
    public void Missing_tensor()
    {
        WriteModel(tensors: ts => ts.Where(t => t.Name != "model.layers.1.mlp.down_proj.weight"));
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.layers.1.mlp.down_proj.weight'", e.Item);
        Assert.Contains("found it in none of model.safetensors", e.Message);
    }

    [Fact]
    public void Tied_config_needs_no_lm_head_but_untied_does()
    {
        WriteModel(tensors: ts => ts.Where(t => t.Name != "lm_head.weight"));
        Assert.Equal("tensor 'lm_head.weight'", Fails(Weights).Item);
        var c = JsonNode.Parse(File.ReadAllText(Config))!.AsObject();
        c["tie_word_embeddings"] = true;
        File.WriteAllText(Config, c.ToJsonString());
        using var w = SafetensorsLoader.Load(_dir);
        Assert.True(w.TiedOutput);
    }

    [Fact]
    public void Layers_beyond_the_config()
    {
        WriteModel(patchConfig: c => c["num_hidden_layers"] = 1);
        var e = Fails(Weights);
        Assert.StartsWith("tensor 'model.layers.1.", e.Item);
        Assert.Contains("found a tensor of layer 1", e.Message);
    }

    [Fact]
    public void Duplicate_tensor_names_in_the_header()
    {
        WriteModel(patchHeader: h => h.Replace("\"model.norm.weight\"", "\"model.layers.0.input_layernorm.weight\""));
        var e = Fails(Weights);
        Assert.Equal("key 'model.layers.0.input_layernorm.weight'", e.Item);
        Assert.Contains("found it twice", e.Message);
    }

    [Fact]
    public void Bad_config_json()
    {
        WriteModel();
        File.WriteAllText(Config, "{\n  \"hidden_size\": 32,\n  \"vocab_size\": ,\n}");
        var e = Fails(Config);
        Assert.Equal("config.json", e.Item);
        Assert.Equal("{\n  \"hidden_size\": 32,\n  \"vocab_size\": ".Length, e.Offset);
    }

    [Theory]
    [InlineData("hidden_size", null, "'hidden_size'", "required key is missing")]
    [InlineData("hidden_size", "\"32\"", "'hidden_size'", "expected an integer, found a string (\"32\")")]
    [InlineData("num_attention_heads", "0", "'num_attention_heads'", "expected a positive integer, found 0")]
    [InlineData("num_key_value_heads", "3", "'num_key_value_heads'", "expected a divisor of num_attention_heads 4, found 3")]
    [InlineData("architectures", "[\"GPT2LMHeadModel\"]", "'architectures'", "found [GPT2LMHeadModel]")]
    [InlineData("rope_scaling", "{\"type\":\"yarn\",\"factor\":4}", "'rope_scaling'", "found type 'yarn' (not supported)")]
    [InlineData("rope_scaling", "{\"type\":\"linear\"}", "'rope_scaling'", "expected a positive number 'factor'")]
    [InlineData("rope_scaling", "{\"rope_type\":\"llama3\",\"factor\":8}", "'rope_scaling'", "expected a number 'low_freq_factor' for llama3 scaling")]
    [InlineData("hidden_act", "\"gelu\"", "'hidden_act'", "found 'gelu'")]
    [InlineData("attention_bias", "true", "'attention_bias'", "o_proj")]
    [InlineData("rms_norm_eps", "-1", "'rms_norm_eps'", "expected a positive number")]
    public void Config_errors_name_the_key(string key, string? json, string item, string message)
    {
        WriteModel(patchConfig: c =>
        {
            c.Remove(key);
            if (json != null) c[key] = JsonNode.Parse(json);
        });
        var e = Fails(Config);
        Assert.Equal(item, e.Item);
        Assert.Contains(message, e.Message);
        string text = File.ReadAllText(Config);
        Assert.Equal(json == null ? 0 : text.IndexOf($"\"{key}\"", StringComparison.Ordinal), e.Offset);
    }

    [Fact]
    public void Missing_config_json()
    {
        WriteModel();
        File.Delete(Config);
        Assert.Equal("config.json", Fails(Config).Item);
    }

    [Fact]
    public void Folder_without_weights()
    {
        WriteModel();
        File.Delete(Weights);
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsLoader.Load(_dir));
        Assert.Equal("weights", e.Item);
    }

    [Fact]
    public void Index_naming_a_missing_shard()
    {
        var m = HfTestModel.Random(seed: 12, "BF16");
        m.Write(_dir, shards: 2);
        File.Delete(Path.Combine(_dir, "model-00002-of-00002.safetensors"));
        var e = Fails(Path.Combine(_dir, "model.safetensors.index.json"));
        Assert.StartsWith("'weight_map/", e.Item);
        Assert.Contains("found no such file", e.Message);
        Assert.True(e.Offset > 0);
    }

    [Fact]
    public void Index_naming_the_wrong_shard()
    {
        var m = HfTestModel.Random(seed: 13, "BF16");
        m.Write(_dir, shards: 2);
        string index = Path.Combine(_dir, "model.safetensors.index.json");
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"model.norm.weight\":\"model-00002-of-00002.safetensors\"",
            "\"model.norm.weight\":\"model-00001-of-00002.safetensors\""));
        var e = Fails(Path.Combine(_dir, "model-00001-of-00002.safetensors"));
        Assert.Equal("tensor 'model.norm.weight'", e.Item);
        Assert.Contains("it is in model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void Index_shard_names_cannot_leave_the_folder()
    {
        var m = HfTestModel.Random(seed: 14, "BF16");
        m.Write(_dir, shards: 2);
        string index = Path.Combine(_dir, "model.safetensors.index.json");
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"model-00001-of-00002.safetensors\"", "\"../model-00001-of-00002.safetensors\""));
        var e = Fails(index);
        Assert.Contains("expected a plain file name", e.Message);
    }

    [Fact]
    public void Non_finite_norm_weights()
    {
        WriteModel(tensors: ts => ts.Select(t => t.Name == "model.norm.weight"
            ? TestTensor.FromFloats(t.Name, "F16", t.Shape, [.. Enumerable.Repeat(1f, 31), float.PositiveInfinity]) : t));
        var e = Fails(Weights);
        Assert.Equal("tensor 'model.norm.weight'", e.Item);
        Assert.Contains("at element 31", e.Message);
    }
}
