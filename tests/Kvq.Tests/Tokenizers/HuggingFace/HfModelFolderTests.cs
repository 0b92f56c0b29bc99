using System.Text.Json.Nodes;
using Kvq.Cache;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Sampling;
using Kvq.Tensors;
using Kvq.Tests.Formats.Safetensors;
using Kvq.Tokenizers;
using Kvq.Tokenizers.HuggingFace;

namespace Kvq.Tests.Tokenizers.HuggingFace;

/// <summary>Hugging Face folders through the front door: weights from safetensors, tokenizer from tokenizer.json.</summary>
public sealed class HfModelFolderTests : IDisposable
{
    private const string Expected = ", there was a little girl named Lily. She loved to play outside in the park.";
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-hf-folder-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>stories260K.gguf turned into an HF folder (weights as the safetensors tests convert them, tokenizer.json
    /// exported from its vocabulary), loaded by ModelLoader and run greedily: the MANIFEST's continuation.</summary>
    [Fact]
    public void StoriesFolder_GeneratesTheManifestContinuation()
    {
        using (var g = GgufFile.Open(Fixtures.StoriesGguf)) SafetensorsGgufEquivalenceTests.WriteStoriesAsHf(g, _dir);
        HfTokenizerJson.Write(Path.Combine(_dir, "tokenizer.json"), HfTokenizerJson.SentencePieceFromGguf(Fixtures.StoriesGguf));
        HfTokenizerJson.Write(Path.Combine(_dir, "tokenizer_config.json"), HfTokenizerJson.SentencePieceConfig());

        using var loaded = ModelLoader.Load(_dir);
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(loaded.Tokenizer);
        Assert.Equal(RopeStyle.Neox, loaded.Weights.Config.RopeStyle);
        var gguf = HfTestFiles.SentencePieceGguf("stories260K.gguf");
        Assert.Equal(gguf.Encode("Once upon a time", true), tok.Encode("Once upon a time", tok.AddBos));

        var model = new Transformer(loaded.Weights, new Parallelism(2));
        var streamed = "";
        var result = new Generator(model, loaded.Tokenizer).Generate("Once upon a time",
            new GenerationOptions { MaxTokens = 40, Sampler = SamplerOptions.Greedy },
            new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), s => streamed += s);
        Assert.StartsWith(Expected, result.Text);
        Assert.Equal(result.Text, streamed);
    }

    [Fact]
    public void FolderWithoutTokenizerJson_IsATypedError()
    {
        HfTestModel.Random(seed: 1).Write(_dir);
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(_dir));
        Assert.Equal("tokenizer.json", e.Item);
        Assert.Contains("found none", e.Message);
    }

    /// <summary>config.json's vocab_size above the tokenizer's: the ids in between become unused "[PADn]" tokens, as
    /// llama.cpp's converter makes them; below it: an error naming the id.</summary>
    [Fact]
    public void VocabularyIsPaddedToConfigVocabSize_AndMayNotExceedIt()
    {
        var model = HfTestModel.Random(seed: 2); // vocab_size 40
        model.Write(_dir);
        HfTokenizerJson.Write(Path.Combine(_dir, "tokenizer.json"), HfTokenizerBadInputTests.SmallSentencePiece());
        using (var loaded = ModelLoader.Load(_dir))
        {
            var tok = Assert.IsType<SentencePieceBpeTokenizer>(loaded.Tokenizer);
            Assert.Equal(40, tok.VocabSize);
            Assert.Equal("[PAD39]", tok.Piece(39));
            Assert.Equal(TokenType.Unused, tok.Type(39));
            Assert.True(tok.TokenBytes(39).IsEmpty);
            Assert.Equal(1, tok.BosId);   // from config.json's bos_token_id (the tokenizer files name none)
            Assert.True(tok.AddBos);      // the template puts <s> first
        }

        model.Config["vocab_size"] = 8;
        File.WriteAllText(Path.Combine(_dir, "config.json"), model.Config.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(_dir));
        Assert.EndsWith("tokenizer.json", e.FilePath);
        Assert.Contains("vocab_size 8", e.Message);
    }

    /// <summary>config.json's eos_token_id list (Llama 3.1 style) ends generation at every id in it.</summary>
    [Fact]
    public void EveryConfigEosId_EndsGeneration()
    {
        var model = HfTestModel.Random(seed: 3);
        model.Config["eos_token_id"] = new JsonArray(2, 9);
        model.Write(_dir);
        var info = SafetensorsLoader.ReadInfo(_dir);
        var json = Path.Combine(_dir, "tokenizer.json");
        HfTokenizerJson.Write(json, HfTokenizerBadInputTests.SmallSentencePiece());
        var tok = HfTokenizerLoader.Load(json, null, info.Config.Tokens, info.ConfigPath);
        Assert.Equal(2, tok.EosId);
        Assert.True(tok.IsEndOfGeneration(2));
        Assert.True(tok.IsEndOfGeneration(9));
        Assert.False(tok.IsEndOfGeneration(8));
    }
}
