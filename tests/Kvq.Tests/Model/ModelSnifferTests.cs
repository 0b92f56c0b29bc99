using System.Text;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Model;
using Kvq.Tests.Formats.Safetensors;
using Kvq.Tests.Tokenizers.HuggingFace;

namespace Kvq.Tests.Model;

/// <summary>Model inputs recognised by content: symbolic links followed (a Hugging Face cache layout loads), and every
/// input that is not a model gives a <see cref="NotAModelException"/> naming what it looks like.</summary>
public sealed class ModelSnifferTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-sniff-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Link(string name, string target)
    {
        var path = Path.Combine(_dir, name);
        File.CreateSymbolicLink(path, target);
        return path;
    }

    [Fact]
    public void GgufThroughASymlinkLoads()
    {
        using var loaded = ModelLoader.Load(Link("model.gguf", Fixtures.StoriesGguf));
        Assert.Equal(512, loaded.Weights.Config.VocabSize);
    }

    [Fact]
    public void Llama2cThroughASymlinkLoadsWithTheTokenizerBesideItsTarget()
    {
        using var loaded = ModelLoader.Load(Link("stories.bin", Fixtures.StoriesBin));
        Assert.Equal(ModelFormat.Llama2c, ModelSniffer.Detect(Path.Combine(_dir, "stories.bin")).Format);
        Assert.Equal(512, loaded.Tokenizer.VocabSize);
    }

    [Fact]
    public void DanglingSymlinkSaysWhereItPoints()
    {
        var e = Assert.Throws<FileNotFoundException>(() => ModelLoader.Load(Link("gone.gguf", Path.Combine(_dir, "nowhere.gguf"))));
        Assert.Contains("nowhere.gguf", e.Message);
    }

    /// <summary>models--org--name/snapshots/&lt;hash&gt;/{config.json, model.safetensors, tokenizer.json} as links into blobs/.</summary>
    [Fact]
    public void HuggingFaceCacheLayoutLoads()
    {
        var repo = Path.Combine(_dir, "models--kvq--stories260K");
        var staging = Path.Combine(_dir, "staging");
        using (var g = GgufFile.Open(Fixtures.StoriesGguf)) SafetensorsGgufEquivalenceTests.WriteStoriesAsHf(g, staging);
        HfTokenizerJson.Write(Path.Combine(staging, "tokenizer.json"), HfTokenizerJson.SentencePieceFromGguf(Fixtures.StoriesGguf));
        var blobs = Directory.CreateDirectory(Path.Combine(repo, "blobs")).FullName;
        var snapshot = Directory.CreateDirectory(Path.Combine(repo, "snapshots", "0123456789abcdef")).FullName;
        int n = 0;
        foreach (var file in Directory.GetFiles(staging))
        {
            var blob = Path.Combine(blobs, $"{++n:x40}");
            File.Move(file, blob);
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", Path.GetFileName(blob)));
        }

        using (var loaded = ModelLoader.Load(snapshot))
        {
            Assert.Equal(ModelFormat.HuggingFaceFolder, ModelSniffer.Detect(snapshot).Format);
            Assert.Equal(512, loaded.Weights.Config.VocabSize);
            Assert.Equal(loaded.Tokenizer.Encode("Once upon a time", true), EvalFixturesStories().Encode("Once upon a time", true));
        }
        // The cache root with one snapshot, and the snapshot's weights file, load that snapshot.
        Assert.Equal(snapshot, ModelSniffer.Detect(repo).Path);
        Assert.Equal(snapshot, ModelSniffer.Detect(Path.Combine(snapshot, "model.safetensors")).Path);
    }

    private static Kvq.Tokenizers.ITokenizer EvalFixturesStories() => Eval.EvalFixtures.Stories.Tokenizer;

    private NotAModelException NotAModel(string path)
    {
        var e = Assert.Throws<NotAModelException>(() => ModelLoader.Load(path));
        Assert.Equal(path, e.FilePath);
        Assert.Contains(path, e.Message);
        Assert.Contains("Expected a GGUF file", e.Message);
        return e;
    }

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void TextFileIsNamedAsText()
    {
        // The case: read as a llama2.c header, "n_heads ... expected a divisor of dim 1936877894".
        var e = NotAModel(Write("notes.bin", "Once upon a time there was a model file that was really a story.\n"));
        Assert.StartsWith("a text file", e.LooksLike);
    }

    [Fact]
    public void TokenizerJsonIsNamed() =>
        Assert.Contains("tokenizer.json",
            NotAModel(Write("tokenizer.json", "{\"version\": \"1.0\", \"added_tokens\": [], \"model\": {\"type\": \"BPE\", \"vocab\": {}}}")).LooksLike);

    [Fact]
    public void ConfigJsonIsNamed() =>
        Assert.Contains("pass the folder that holds it",
            NotAModel(Write("config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\"}")).LooksLike);

    [Fact]
    public void EmptyFileIsNamed() => Assert.Equal("an empty file", NotAModel(Write("empty.gguf", "")).LooksLike);

    [Fact]
    public void LoneSafetensorsWithoutConfigIsNamed()
    {
        var path = Path.Combine(_dir, "model.safetensors");
        SafetensorsTestWriter.Write(path, [TestTensor.FromFloats("x", "F32", [2], [1f, 2f])]);
        Assert.StartsWith("a lone safetensors file", NotAModel(path).LooksLike);
    }

    [Fact]
    public void Llama2cTokenizerIsNamed() =>
        Assert.StartsWith("a llama2.c tokenizer", NotAModel(Link("tok.bin", Fixtures.StoriesTokenizerBin)).LooksLike);

    [Fact]
    public void FolderWithoutConfigIsNamed()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_dir, "weights")).FullName;
        Assert.StartsWith("a folder without config.json", NotAModel(folder).LooksLike);
        File.WriteAllText(Path.Combine(folder, "a.gguf"), "x");
        Assert.Contains("a.gguf", NotAModel(folder).LooksLike);
    }

    [Fact]
    public void UnknownBinaryShowsItsFirstBytes()
    {
        var path = Path.Combine(_dir, "blob.bin");
        File.WriteAllBytes(path, [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3]);
        Assert.Contains("DEADBEEF", NotAModel(path).LooksLike);
    }

    [Fact]
    public void ZipIsNamed()
    {
        var path = Path.Combine(_dir, "model.pth");
        File.WriteAllBytes(path, [.. Encoding.ASCII.GetBytes("PK"), 3, 4, 0, 0, 0, 0]);
        Assert.StartsWith("a zip archive", NotAModel(path).LooksLike);
    }
}
