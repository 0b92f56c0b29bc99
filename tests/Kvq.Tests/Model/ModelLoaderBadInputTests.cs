using System.Text;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Model;

namespace Kvq.Tests.Model;

/// <summary>Model files that parse as GGUF but cannot be a model: each gives a typed error naming file, item and offset.</summary>
public class ModelLoaderBadInputTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-badmodel-" + Guid.NewGuid().ToString("N"));

    private string WriteTiny() => TinyModelWriter.Write(new TinyModelSpec(), _dir);

    private static void Patch(string path, long offset, byte[] bytes)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Write);
        fs.Position = offset;
        fs.Write(bytes);
    }

    private static ModelFormatException Load(string path)
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path).Dispose());
        Assert.Equal(path, e.FilePath);
        Assert.Contains(Path.GetFileName(path), e.Message);
        return e;
    }

    [Fact]
    public void NaNInANormNamesTheTensorAndOffset()
    {
        var path = WriteTiny();
        long at;
        using (var g = GgufFile.Open(path)) at = g.Tensor("blk.1.ffn_norm.weight").DataOffset + 4 * 5;
        Patch(path, at, BitConverter.GetBytes(float.NaN));
        var e = Load(path);
        Assert.Contains("blk.1.ffn_norm.weight", e.Item);
        Assert.Equal(at, e.Offset);
        Assert.Contains("element 5", e.Message);
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        var path = WriteTiny();
        var bytes = File.ReadAllBytes(path);
        var name = Encoding.UTF8.GetBytes("blk.0.ffn_up.weight");
        int at = bytes.AsSpan().IndexOf(name);
        Patch(path, at, Encoding.UTF8.GetBytes("blk.0.ffn_uX.weight"));
        var e = Load(path);
        Assert.Contains("blk.0.ffn_up.weight", e.Item);
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public void ShapeMismatchSaysExpectedAndFound()
    {
        var path = WriteTiny();
        long dimsAt;
        using (var g = GgufFile.Open(path))
        {
            var t = g.Tensor("blk.0.attn_k.weight"); // [64, 32]: swap to [32, 64], same byte size
            dimsAt = t.HeaderOffset + 8 + Encoding.UTF8.GetByteCount(t.Name) + 4;
        }
        Patch(path, dimsAt, [.. BitConverter.GetBytes(32UL), .. BitConverter.GetBytes(64UL)]);
        var e = Load(path);
        Assert.Contains("blk.0.attn_k.weight", e.Item);
        Assert.Contains("expected shape [64, 32]", e.Message);
        Assert.Contains("[32, 64]", e.Message);
    }

    [Fact]
    public void UnsupportedArchitectureIsRefused()
    {
        var path = TinyModelWriter.Write(new TinyModelSpec(Arch: "gemma"), _dir);
        var e = Load(path);
        Assert.Contains("general.architecture", e.Item);
        Assert.Contains("'gemma'", e.Message);
    }

    [Fact]
    public void UnknownExtraTensorIsNamed()
    {
        var path = TinyModelWriter.Write(new TinyModelSpec(), _dir, w => w.AddTensor("blk.0.attn_rot_embd", [4], new float[4]));
        var e = Load(path);
        Assert.Equal("tensor 'blk.0.attn_rot_embd'", e.Item);
        Assert.Contains("1 tensor(s) not part of a llama model as kvq reads it: 'blk.0.attn_rot_embd'", e.Message);
        Assert.Contains("llama.cpp refuses such a file too", e.Message);
    }

    [Fact]
    public void RopeFrequencyFactorsMustBePositiveAndOnePerPair()
    {
        // Llama 3.1's rope_freqs.weight is read (one factor per rotated pair: head dim 16 -> 8); zeros and a wrong count are named.
        var zeros = TinyModelWriter.Write(new TinyModelSpec(Seed: 21), _dir, w => w.AddTensor("rope_freqs.weight", [8], new float[8]));
        Assert.Contains("RoPE frequency factor 0 must be positive", Load(zeros).Message);
        var wrong = TinyModelWriter.Write(new TinyModelSpec(Seed: 22), _dir, w => w.AddTensor("rope_freqs.weight", [6], new float[] { 1, 1, 1, 1, 1, 1 }));
        var e = Load(wrong);
        Assert.Equal("tensor 'rope_freqs.weight'", e.Item);
        Assert.Contains("expected 8 elements", e.Message);
    }

    [Fact]
    public void MissingOutputTiesToTheEmbeddingsWithANote()
    {
        var path = TinyModelWriter.Write(new TinyModelSpec(Tied: true), _dir);
        using var loaded = ModelLoader.Load(path);
        Assert.True(loaded.Weights.TiedOutput);
        var note = Assert.Single(loaded.Weights.Notes);
        Assert.Contains("has no output.weight: the output is tied to token_embd.weight", note);
        using var untied = ModelLoader.Load(WriteTiny());
        Assert.Empty(untied.Weights.Notes);
    }

    [Fact]
    public void MissingFileIsFileNotFound() =>
        Assert.Throws<FileNotFoundException>(() => ModelLoader.Load(Path.Combine(_dir, "nope.gguf")));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }
}
