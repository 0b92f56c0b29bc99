using Kvq.Formats.Gguf;
using Kvq.Tokenizers;
using LLama.Native;

namespace Kvq.Tests.Tokenizers;

public class SentencePieceBpeTokenizerTests
{
    private static readonly Dictionary<string, Lazy<SentencePieceBpeTokenizer>> Cache = new()
    {
        ["books-19m.gguf"] = new(() => Load(Fixtures.BooksGguf)),
        ["stories260K.gguf"] = new(() => Load(Fixtures.StoriesGguf)),
    };

    private static SentencePieceBpeTokenizer Load(string path)
    {
        using var gguf = GgufFile.Open(path);
        return Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFactory.FromGguf(gguf));
    }

    internal static SentencePieceBpeTokenizer Tokenizer(string model) => Cache[model].Value;
    internal static LlamaCppVocab Oracle(string model) => LlamaCppVocab.Load(Fixtures.Model(model));

    public static TheoryData<string> Models() => new() { "books-19m.gguf", "stories260K.gguf" };

    public static TheoryData<string, string> ModelsAndFiles()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in Models())
            foreach (var file in TokenizerTexts.Files())
                data.Add(model, file);
        return data;
    }

    public static TheoryData<string, int> ModelsAndEdgeCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var model in Models())
            foreach (var i in TokenizerTexts.EdgeCaseIndices())
                data.Add(model, i);
        return data;
    }

    [Fact]
    public void ManifestSentence_GivesTheListedIds()
    {
        var tok = Tokenizer("books-19m.gguf");
        // MANIFEST.md lists these for " It was a dark ...": they are the ids of the text without its leading space,
        // where the dummy prefix supplies the space (579 = '▁It'). With the space kept, llama.cpp gives '▁▁' 'It'.
        int[] listed = [1, 579, 322, 261, 1205, 282, 6544, 1698, 881, 8107, 263, 2882, 1442, 292, 2177, 2456, 8082];
        Assert.Equal(listed, tok.Encode("It was a dark and stormy night; the rain fell in torrents", addBos: true));
        const string spaced = " It was a dark and stormy night; the rain fell in torrents";
        int[] ids = tok.Encode(spaced, addBos: true);
        Assert.Equal(Oracle("books-19m.gguf").Tokenize(spaced, addSpecial: true), ids);
        Assert.Equal([1, 289, 897], ids[..3]);
        Assert.Equal(listed[2..], ids[3..]);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Metadata_MatchesLlamaCpp(string model)
    {
        var tok = Tokenizer(model);
        var vocab = Oracle(model).Vocab;
        Assert.Equal(vocab.Count, tok.VocabSize);
        Assert.Equal((int?)vocab.BOS, tok.BosId);
        Assert.Equal((int?)vocab.EOS, tok.EosId);
        Assert.Equal(vocab.ShouldAddBOS, tok.AddBos);
        Assert.True(tok.AddSpacePrefix);
        Assert.Equal(0, tok.UnknownId);
        for (int id = 0; id < tok.VocabSize; id++)
        {
            LLamaToken t = id;
            Assert.Equal(t.IsEndOfGeneration(vocab), tok.IsEndOfGeneration(id));
            Assert.Equal(t.IsControl(vocab), tok.Type(id) == TokenType.Control);
        }
        Assert.Equal(TokenType.Unknown, tok.Type(0));
        Assert.Equal(TokenType.Byte, tok.Type(3 + 0x41));
        Assert.Equal("<0x41>", tok.Piece(3 + 0x41));
        Assert.Equal([0x41], tok.TokenBytes(3 + 0x41).ToArray());
        Assert.True(tok.TokenBytes(tok.BosId).IsEmpty);
        Assert.True(tok.IsEndOfGeneration(tok.EosId));
    }

    /// <summary>Each text file whole, as one prompt: ids as llama.cpp's, and the text comes back from them.</summary>
    [Theory]
    [MemberData(nameof(ModelsAndFiles))]
    public void WholeTextFile_MatchesLlamaCpp(string model, string file)
    {
        var tok = Tokenizer(model);
        var llama = Oracle(model);
        string text = TokenizerTexts.Read(file);
        int[] ids = tok.Encode(text, addBos: true);
        int[] expected = llama.Tokenize(text, addSpecial: true);
        AssertSameTokens(expected, ids, tok);
        Assert.Equal(text, TokenDecoder.Decode(tok, ids.AsSpan(1)));
        Assert.Equal(llama.Detokenize(ids), TokenDecoder.DecodeBytes(tok, ids));
    }

    [Theory]
    [MemberData(nameof(ModelsAndEdgeCases))]
    public void EdgeCase_MatchesLlamaCpp(string model, int index)
    {
        var tok = Tokenizer(model);
        var llama = Oracle(model);
        string text = TokenizerTexts.EdgeCases[index];
        foreach (bool special in (bool[])[false, true])
        {
            int[] withBos = tok.Encode(text, addBos: true, parseSpecial: special);
            AssertSameTokens(llama.Tokenize(text, addSpecial: true, parseSpecial: special), withBos, tok);
            int[] without = tok.Encode(text, addBos: false, parseSpecial: special);
            AssertSameTokens(llama.Tokenize(text, addSpecial: false, parseSpecial: special), without, tok);
            Assert.Equal(llama.Detokenize(withBos), TokenDecoder.DecodeBytes(tok, withBos));
            Assert.Equal(llama.Detokenize(without), TokenDecoder.DecodeBytes(tok, without));
            // Text round-trips, except a literal '▁', which decodes as a space (in llama.cpp too).
            if (!special && !text.Contains('\u2581'))
            {
                Assert.Equal(text, TokenDecoder.Decode(tok, without));
                Assert.Equal(text, TokenDecoder.Decode(tok, withBos.AsSpan(1)));
                Assert.Equal(text.Length == 0 ? "" : " " + text, TokenDecoder.Decode(tok, withBos)); // llama.cpp keeps it
            }
        }
    }

    [Fact]
    public void SpecialTokens_AreParsedOnlyWhenAsked()
    {
        var tok = Tokenizer("books-19m.gguf");
        Assert.Equal([1, 261, 1, 272], tok.Encode("a<s>b", addBos: true, parseSpecial: true)); // '▁a' <s> '▁b'
        int[] plain = tok.Encode("a<s>b", addBos: true);
        Assert.DoesNotContain(1, plain[1..]);
        Assert.Equal("a<s>b", TokenDecoder.Decode(tok, plain.AsSpan(1)));
    }

    [Fact]
    public void UnpairedSurrogate_IsTokenizedAsReplacementCharacter()
    {
        var tok = Tokenizer("books-19m.gguf");
        const string text = "a\uD800b\uDC00c";
        int[] ids = tok.Encode(text, addBos: true);
        Assert.Equal(Oracle("books-19m.gguf").Tokenize(text, addSpecial: true), ids);
        Assert.Equal(tok.Encode("a\uFFFDb\uFFFDc", addBos: true), ids);
    }

    /// <summary>llama.cpp's whole-sequence decoding on random ids, control, unknown and byte tokens included.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void DecodeOfRandomIds_MatchesLlamaDetokenize(string model)
    {
        var tok = Tokenizer(model);
        var llama = Oracle(model);
        var rng = new Random(1234);
        for (int trial = 0; trial < 300; trial++)
        {
            var ids = new int[rng.Next(0, 24)];
            for (int i = 0; i < ids.Length; i++)
                ids[i] = rng.Next(4) == 0 ? rng.Next(0, 259) : rng.Next(tok.VocabSize); // specials and bytes often
            if (ids.Length > 0 && rng.Next(2) == 0) ids[0] = tok.BosId;
            Assert.Equal(llama.Detokenize(ids), TokenDecoder.DecodeBytes(tok, ids));
        }
    }

    /// <summary>SentencePiece itself (Microsoft.ML.Tokenizers reading books-19m.tokenizer.model) as a second
    /// opinion: the GGUF carries the same pieces, and ordinary prose tokenizes the same.</summary>
    [Fact]
    public void SentencePieceModel_AgreesOnPiecesAndProse()
    {
        var tok = Tokenizer("books-19m.gguf");
        using var model = File.OpenRead(Fixtures.Model("books-19m.tokenizer.model"));
        var sp = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(model, addBeginOfSentence: true, addEndOfSentence: false);
        Assert.Equal(tok.VocabSize, sp.Vocabulary.Count);
        foreach (var (piece, id) in sp.Vocabulary) Assert.Equal(piece, tok.Piece(id));

        string stories = TokenizerTexts.Read("tinystories/TinyStories-valid.first1000.txt");
        foreach (string paragraph in stories.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
            Assert.Equal(sp.EncodeToIds(paragraph).ToArray(), tok.Encode(paragraph, addBos: true));
    }

    /// <summary>Where llama.cpp and SentencePiece part ways, we follow llama.cpp: a run of spaces before
    /// punctuation ('▁▁' '▁"' in llama.cpp, '▁▁▁' '"' in SentencePiece), and equal-score merge order ('V' 'II' 'Is'
    /// against 'V' 'III' 's').</summary>
    [Theory]
    [InlineData("a   \"b")]
    [InlineData("The Mark VIIIs were produced")]
    public void KnownDifferencesFromSentencePiece_FollowLlamaCpp(string text)
    {
        var tok = Tokenizer("books-19m.gguf");
        using var model = File.OpenRead(Fixtures.Model("books-19m.tokenizer.model"));
        var sp = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(model, addBeginOfSentence: true, addEndOfSentence: false);
        int[] ids = tok.Encode(text, addBos: true);
        Assert.Equal(Oracle("books-19m.gguf").Tokenize(text, addSpecial: true), ids);
        Assert.NotEqual(sp.EncodeToIds(text).ToArray(), ids);
    }

    internal static void AssertSameTokens(int[] expected, int[] actual, ITokenizer tok)
    {
        if (expected.AsSpan().SequenceEqual(actual)) return;
        int i = 0;
        while (i < expected.Length && i < actual.Length && expected[i] == actual[i]) i++;
        string Show(int[] ids) => string.Join(" ", ids.Skip(Math.Max(0, i - 3)).Take(10).Select(t => $"{t}:'{tok.Piece(t)}'"));
        Assert.Fail($"{expected.Length} tokens expected, {actual.Length} found; first difference at {i}\n" +
                    $"llama.cpp: {Show(expected)}\nkvq:       {Show(actual)}");
    }
}
