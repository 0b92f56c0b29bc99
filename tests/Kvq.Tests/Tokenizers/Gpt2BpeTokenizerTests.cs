using System.Collections.Concurrent;
using Kvq.Formats.Gguf;
using Kvq.Tokenizers;
using LLama.Native;

namespace Kvq.Tests.Tokenizers;

public class Gpt2BpeTokenizerTests
{
    private const int SliceChars = 60_000;
    private static readonly ConcurrentDictionary<string, Lazy<Gpt2BpeTokenizer>> Cache = new();

    internal static Gpt2BpeTokenizer Tokenizer(string? pre, bool? addBos = false) =>
        Cache.GetOrAdd($"{pre}|{addBos}", _ => new Lazy<Gpt2BpeTokenizer>(() =>
        {
            using var gguf = GgufFile.Open(Gpt2TestModel.GgufPath(pre, addBos));
            return Assert.IsType<Gpt2BpeTokenizer>(TokenizerFactory.FromGguf(gguf));
        })).Value;

    private static LlamaCppVocab Oracle(string? pre, bool? addBos = false) => LlamaCppVocab.Load(Gpt2TestModel.GgufPath(pre, addBos));

    public static TheoryData<string> PreTypes() => new() { "gpt-2", "llama-bpe", "qwen2", "default" };

    public static TheoryData<string, int> PreTypesAndEdgeCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var pre in PreTypes())
            foreach (var i in TokenizerTexts.EdgeCaseIndices())
                data.Add(pre, i);
        return data;
    }

    public static TheoryData<string, string> PreTypesAndFiles()
    {
        var data = new TheoryData<string, string>();
        foreach (var pre in PreTypes())
            foreach (var file in TokenizerTexts.Files())
                data.Add(pre, file);
        return data;
    }

    [Theory]
    [MemberData(nameof(PreTypes))]
    public void Metadata_MatchesLlamaCpp(string pre)
    {
        var tok = Tokenizer(pre);
        var vocab = Oracle(pre).Vocab;
        Assert.Equal(vocab.Count, tok.VocabSize);
        Assert.Equal((int?)vocab.BOS, tok.BosId);
        Assert.Equal((int?)vocab.EOS, tok.EosId);
        Assert.Equal(vocab.ShouldAddBOS, tok.AddBos);
        Assert.False(tok.AddSpacePrefix);
        Assert.Equal(Gpt2TestModel.Merges.Length, tok.MergeCount);
        for (int id = 0; id < tok.VocabSize; id++)
        {
            LLamaToken t = id;
            Assert.Equal(t.IsEndOfGeneration(vocab), tok.IsEndOfGeneration(id));
            Assert.Equal(t.IsControl(vocab), tok.Type(id) == TokenType.Control);
        }
        Assert.True(tok.IsEndOfGeneration(Gpt2TestModel.EndOfText));
        Assert.True(tok.IsEndOfGeneration(Gpt2TestModel.ImEnd)); // found by its text, as llama.cpp does
        Assert.False(tok.IsEndOfGeneration(Gpt2TestModel.ImStart));
        Assert.Equal(TokenType.UserDefined, tok.Type(Gpt2TestModel.User));
    }

    [Theory]
    [InlineData("llama-bpe", null, true)]   // Llama-3 vocabularies add BOS unless the file says otherwise
    [InlineData("llama-bpe", false, false)]
    [InlineData("gpt-2", null, false)]
    [InlineData("qwen2", true, true)]
    public void AddBos_FollowsMetadataAndPreTypeDefault(string pre, bool? addBos, bool expected)
    {
        var tok = Tokenizer(pre, addBos);
        Assert.Equal(expected, tok.AddBos);
        Assert.Equal(Oracle(pre, addBos).Vocab.ShouldAddBOS, tok.AddBos);
        Assert.Equal(Oracle(pre, addBos).Tokenize("Hi there", addSpecial: true), tok.Encode("Hi there", tok.AddBos));
    }

    [Fact]
    public void MissingPre_IsDefault_AsInLlamaCpp()
    {
        var tok = Tokenizer(null);
        Assert.Equal(BpePreTokenizer.Default, tok.PreTokenizer);
        foreach (string text in TokenizerTexts.EdgeCases)
            SentencePieceBpeTokenizerTests.AssertSameTokens(Oracle(null).Tokenize(text, addSpecial: true), tok.Encode(text, tok.AddBos), tok);
    }

    [Theory]
    [MemberData(nameof(PreTypesAndEdgeCases))]
    public void EdgeCase_MatchesLlamaCpp(string pre, int index)
    {
        var tok = Tokenizer(pre);
        var llama = Oracle(pre);
        string text = TokenizerTexts.EdgeCases[index];
        foreach (bool special in (bool[])[false, true])
        {
            int[] ids = tok.Encode(text, tok.AddBos, special);
            SentencePieceBpeTokenizerTests.AssertSameTokens(llama.Tokenize(text, addSpecial: true, parseSpecial: special), ids, tok);
            // Decoding gives llama.cpp's pieces back to back (what it streams), and the text itself.
            Assert.Equal(ids.SelectMany(llama.TokenToPiece).ToArray(), TokenDecoder.DecodeBytes(tok, ids));
            if (!special) Assert.Equal(text, TokenDecoder.Decode(tok, ids));
        }
    }

    /// <summary>A 60,000-character slice from the middle of every text file, for each pre-tokenizer.</summary>
    [Theory]
    [MemberData(nameof(PreTypesAndFiles))]
    public void TextSlice_MatchesLlamaCpp(string pre, string file)
    {
        var tok = Tokenizer(pre);
        string text = TokenizerTexts.Read(file);
        int start = Math.Max(0, text.Length / 2 - SliceChars / 2);
        string slice = text.Substring(start, Math.Min(SliceChars, text.Length - start));
        int[] ids = tok.Encode(slice, tok.AddBos);
        SentencePieceBpeTokenizerTests.AssertSameTokens(Oracle(pre).Tokenize(slice, addSpecial: true), ids, tok);
        Assert.Equal(slice, TokenDecoder.Decode(tok, ids));
    }

    /// <summary>GPT-2's own tokenizer (Microsoft.ML.Tokenizers' tiktoken "gpt2", which always parses
    /// &lt;|endoftext|&gt;) as a third opinion on plain text.</summary>
    [Fact]
    public void Gpt2Pre_AgreesWithTiktoken()
    {
        var tok = Tokenizer("gpt-2");
        var tiktoken = Microsoft.ML.Tokenizers.TiktokenTokenizer.CreateForModel("gpt2");
        foreach (string file in TokenizerTexts.Files())
        {
            string text = TokenizerTexts.Read(file);
            string slice = text[..Math.Min(SliceChars, text.Length)];
            SentencePieceBpeTokenizerTests.AssertSameTokens(tiktoken.EncodeToIds(slice).ToArray(), tok.Encode(slice, false, parseSpecial: true), tok);
        }
    }

    /// <summary>Llama-3's ignore_merges: a word that is a piece is taken whole even when no merge path builds it.</summary>
    [Fact]
    public void Llama3_TakesWholeWordPieces_WithoutMerging()
    {
        const string text = "say zzqxj now";
        int[] llama3 = Tokenizer("llama-bpe").Encode(text, addBos: false);
        int[] gpt2 = Tokenizer("gpt-2").Encode(text, addBos: false);
        Assert.Contains(Gpt2TestModel.Unmergeable, llama3);
        Assert.DoesNotContain(Gpt2TestModel.Unmergeable, gpt2);
        Assert.Equal(Oracle("llama-bpe").Tokenize(text, addSpecial: false), llama3);
        Assert.Equal(Oracle("gpt-2").Tokenize(text, addSpecial: false), gpt2);
    }

    [Theory]
    [InlineData(BpePreTokenizer.Gpt2, "12345| 678|x", "12345", "|", "\u0120678", "|", "x")]     // digit runs whole
    [InlineData(BpePreTokenizer.Llama3, "12345| 678|x", "123", "45", "|", "\u0120", "678", "|x")] // threes; "|x" one word
    [InlineData(BpePreTokenizer.Qwen2, "12 x", "1", "2", "\u0120x")]                        // single digits
    [InlineData(BpePreTokenizer.Default, "a,b 1234", "a", ",", "b", "\u0120", "123", "4")]    // punctuation first
    [InlineData(BpePreTokenizer.Llama3, "I'M 𝐀𝐁!\n\n", "I", "'M", "\u0120\u00F0\u013F\u0132\u0122\u00F0\u013F\u0132\u0123", "!\u010A\u010A")]
    public void WordSplitting_FollowsThePreTokenizer(BpePreTokenizer pre, string text, params string[] words)
    {
        var found = new List<string>();
        new BpeWordSplitter(pre).Split(text, found);
        Assert.Equal(words, found);
    }

    [Fact]
    public void SpecialTokens_ControlOnlyWhenAsked_UserDefinedAlways()
    {
        var tok = Tokenizer("qwen2");
        const string text = "<|im_start|>user [USER]<|im_end|>";
        int[] parsed = tok.Encode(text, false, parseSpecial: true);
        Assert.Equal(Gpt2TestModel.ImStart, parsed[0]);
        Assert.Equal(Gpt2TestModel.ImEnd, parsed[^1]);
        Assert.Contains(Gpt2TestModel.User, parsed);
        int[] plain = tok.Encode(text, false);
        Assert.DoesNotContain(Gpt2TestModel.ImStart, plain);
        Assert.Contains(Gpt2TestModel.User, plain);
        Assert.Equal(text, TokenDecoder.Decode(tok, plain));
        Assert.Equal("user [USER]", TokenDecoder.Decode(tok, parsed)); // control tokens decode to nothing
    }
}
