using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Tokenizers;

namespace Kvq.Tests.Tokenizers;

public class TokenizerFactoryTests
{
    [Fact]
    public void PicksTheTokenizerTheFileNames()
    {
        using (var books = GgufFile.Open(Fixtures.BooksGguf))
            Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFactory.FromGguf(books));
        using (var gpt2 = GgufFile.Open(Gpt2TestModel.GgufPath("qwen2")))
            Assert.Equal(BpePreTokenizer.Qwen2, Assert.IsType<Gpt2BpeTokenizer>(TokenizerFactory.FromGguf(gpt2)).PreTokenizer);
    }

    /// <summary>A small SentencePiece vocabulary with every token type and non-default metadata, checked against
    /// llama.cpp loading the same file.</summary>
    [Fact]
    public void SmallSpmVocabulary_WithAllTokenTypes_MatchesLlamaCpp()
    {
        using var file = new TempGguf(Spm(w => w
            .Add("tokenizer.ggml.add_space_prefix", false)
            .Add("tokenizer.ggml.add_bos_token", false)
            .Add("tokenizer.ggml.eos_token_id", 2u)
            .Add("tokenizer.ggml.padding_token_id", uint.MaxValue)));
        using var gguf = GgufFile.Open(file.Path);
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFactory.FromGguf(gguf));
        var llama = LlamaCppVocab.Load(file.Path);
        Assert.False(tok.AddSpacePrefix);
        Assert.False(tok.AddBos);
        Assert.Equal(llama.Vocab.ShouldAddBOS, tok.AddBos);
        foreach (string text in (string[])["ab a [X]b", "aab  ab", "zz é", " a", "<s>[X]<pad>", "", "ba ab ab"])
            foreach (bool special in (bool[])[false, true])
            {
                int[] ids = tok.Encode(text, tok.AddBos, special);
                SentencePieceBpeTokenizerTests.AssertSameTokens(llama.Tokenize(text, addSpecial: true, special), ids, tok);
                Assert.Equal(llama.Detokenize(ids), TokenDecoder.DecodeBytes(tok, ids));
            }
        Assert.Equal(TokenType.Unused, tok.Type(Array.IndexOf(SpmPieces, "<pad>")));
        Assert.True(tok.TokenBytes(Array.IndexOf(SpmPieces, "<pad>")).IsEmpty); // unused: no text
        Assert.Equal("[X]"u8.ToArray(), tok.TokenBytes(Array.IndexOf(SpmPieces, "[X]")).ToArray()); // user-defined: as is
    }

    [Fact]
    public void SpecialIds_NoneMarkerKeepsTheDefault()
    {
        using var file = new TempGguf(Spm(w => w.Add("tokenizer.ggml.bos_token_id", uint.MaxValue)));
        using var gguf = GgufFile.Open(file.Path);
        var tok = TokenizerFactory.FromGguf(gguf);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
    }

    [Fact]
    public void MissingByteToken_FallsBackToUnknown()
    {
        // "é" has no piece and its bytes no <0xNN> token here (llama.cpp would throw).
        using var file = new TempGguf(Spm(w => { }, bytes: 0x80));
        using var gguf = GgufFile.Open(file.Path);
        var tok = TokenizerFactory.FromGguf(gguf);
        int[] ids = tok.Encode("é", addBos: false);
        Assert.Equal(new[] { Array.IndexOf(SpmPieces, "\u2581"), 0, 0 }, ids);
    }

    public static TheoryData<string, string> Broken() => new()
    {
        { "no model", "model" },
        { "model bert", "model" },
        { "no tokens", "tokens" },
        { "tokens not strings", "tokens" },
        { "no scores", "scores" },
        { "short scores", "scores" },
        { "short types", "token_type" },
        { "duplicate piece", "tokens" },
        { "bos out of range", "bos_token_id" },
        { "bad byte token", "tokens" },
        { "gpt2 no merges", "merges" },
        { "gpt2 merge without space", "merges" },
        { "gpt2 merge of unknown piece", "merges" },
        { "gpt2 unknown pre", "pre" },
        { "gpt2 add_bos without bos", "add_bos_token" },
    };

    [Theory]
    [MemberData(nameof(Broken))]
    public void BrokenMetadata_ThrowsModelFormatException_NamingTheKey(string damage, string key)
    {
        using var file = new TempGguf(damage switch
        {
            "no model" => Spm(w => { }, model: null),
            "model bert" => Spm(w => { }, model: "bert"),
            "no tokens" => Spm(w => { }, pieces: null),
            "tokens not strings" => Spm(w => w.Add("tokenizer.ggml.tokens", new[] { 1, 2, 3 }), pieces: null),
            "no scores" => Spm(w => { }, scores: false),
            "short scores" => Spm(w => w.Add("tokenizer.ggml.scores", new float[3]), scores: false),
            "short types" => Spm(w => w.Add("tokenizer.ggml.token_type", new[] { 1, 1 }), types: false),
            "duplicate piece" => Spm(w => { }, duplicate: true),
            "bos out of range" => Spm(w => w.Add("tokenizer.ggml.bos_token_id", 100000u)),
            "bad byte token" => Spm(w => { }, badByte: true),
            "gpt2 no merges" => Bpe(merges: null),
            "gpt2 merge without space" => Bpe(merges: ["ab"]),
            "gpt2 merge of unknown piece" => Bpe(merges: ["a zz"]),
            "gpt2 unknown pre" => Bpe(merges: ["a b"], pre: "gpt2"), // llama.cpp rejects it too: the name is "gpt-2"
            _ => Bpe(merges: ["a b"], addBos: true),                 // no bos key and the default 11 is past the end
        });
        using var gguf = GgufFile.Open(file.Path);
        var e = Assert.Throws<ModelFormatException>(() => TokenizerFactory.FromGguf(gguf));
        Assert.Contains($"tokenizer.ggml.{key}", e.Item);
        Assert.Equal(file.Path, e.FilePath);
        if (damage == "gpt2 unknown pre") Assert.ThrowsAny<Exception>(() => LlamaCppVocab.Load(file.Path));
    }

    // ---- small GGUF files ----

    private static readonly string[] SpmPieces = BuildSpmPieces();

    private static string[] BuildSpmPieces()
    {
        var p = new List<string> { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++) p.Add($"<0x{b:X2}>");
        p.AddRange(["\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "aa", "[X]", "<pad>"]);
        return [.. p];
    }

    private static int[] SpmTypes(int bytes)
    {
        var t = new List<int> { 2, 3, 3 };
        for (int b = 0; b < 256; b++) t.Add(b < bytes ? 6 : 1);
        t.AddRange([1, 1, 1, 1, 1, 1, 1, 4, 5]);
        return [.. t];
    }

    private static GgufWriter Spm(Action<GgufWriter> extra, string? model = "llama", bool? pieces = true, bool scores = true,
        bool types = true, bool duplicate = false, bool badByte = false, int bytes = 256)
    {
        string[] p = (string[])SpmPieces.Clone();
        if (duplicate) p[^2] = "ab";
        if (badByte) p[3] = "<0xZZ>";
        if (bytes < 256)
            for (int b = bytes; b < 256; b++) p[3 + b] = $"unused byte {b}"; // pieces that no text spells
        var w = Gpt2TestModel.Header(new GgufWriter(), p.Length);
        if (model != null) w.Add("tokenizer.ggml.model", model);
        if (pieces == true) w.Add("tokenizer.ggml.tokens", p);
        if (scores)
            w.Add("tokenizer.ggml.scores", p.Select((_, i) => i < 259 ? 0f : -(float)(i - 259)).ToArray());
        if (types) w.Add("tokenizer.ggml.token_type", SpmTypes(bytes));
        extra(w);
        return w;
    }

    private static GgufWriter Bpe(string[]? merges, string pre = "gpt-2", bool? addBos = null)
    {
        string[] p = ["a", "b", "ab", "c"];
        var w = Gpt2TestModel.Header(new GgufWriter(), p.Length)
            .Add("tokenizer.ggml.model", "gpt2").Add("tokenizer.ggml.pre", pre).Add("tokenizer.ggml.tokens", p);
        if (merges != null) w.Add("tokenizer.ggml.merges", merges);
        if (addBos != null) w.Add("tokenizer.ggml.add_bos_token", addBos.Value);
        return w;
    }

    private sealed class TempGguf : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"kvq-tok-{Guid.NewGuid():N}.gguf");
        public TempGguf(GgufWriter w) => w.Save(Path);
        public void Dispose() => File.Delete(Path);
    }
}
