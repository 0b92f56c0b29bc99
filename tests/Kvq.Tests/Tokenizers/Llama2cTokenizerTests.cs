using System.Text;
using Kvq.Formats;
using Kvq.Tokenizers;

namespace Kvq.Tests.Tokenizers;

public class Llama2cTokenizerTests
{
    private static readonly Lazy<Llama2cTokenizer> Tok512 = new(() => Llama2cTokenizer.Load(Fixtures.StoriesTokenizerBin));

    [Fact]
    public void Vocabulary_IsTheStoriesGgufVocabulary()
    {
        var tok = Tok512.Value;
        var gguf = SentencePieceBpeTokenizerTests.Tokenizer("stories260K.gguf");
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal(7, tok.MaxTokenLength);
        Assert.Equal("\n<s>\n", tok.Piece(Llama2cTokenizer.Bos));
        for (int id = 0; id < tok.VocabSize; id++)
        {
            if (id is not (Llama2cTokenizer.Bos or Llama2cTokenizer.Eos))
                Assert.Equal(gguf.Piece(id), tok.Piece(id).Replace(' ', '\u2581'));
            Assert.Equal(gguf.Score(id), tok.Score(id));
            Assert.Equal(gguf.Type(id), tok.Type(id));
            Assert.Equal(gguf.TokenBytes(id).ToArray(), tok.TokenBytes(id).ToArray());
        }
    }

    /// <summary>The whole TinyStories file: llama2.c's tokenizer, the GGUF's and llama.cpp's give the same ids.</summary>
    [Fact]
    public void TinyStories_MatchesStoriesGgufAndLlamaCpp()
    {
        string text = TokenizerTexts.Read("tinystories/TinyStories-valid.first1000.txt");
        int[] ids = Tok512.Value.Encode(text, addBos: true);
        var gguf = SentencePieceBpeTokenizerTests.Tokenizer("stories260K.gguf");
        SentencePieceBpeTokenizerTests.AssertSameTokens(gguf.Encode(text, addBos: true), ids, gguf);
        SentencePieceBpeTokenizerTests.AssertSameTokens(
            SentencePieceBpeTokenizerTests.Oracle("stories260K.gguf").Tokenize(text, addSpecial: true), ids, gguf);
        Assert.Equal(text, TokenDecoder.Decode(Tok512.Value, ids.AsSpan(1)));
    }

    [Fact]
    public void EdgeCases_MatchStoriesGguf()
    {
        var gguf = SentencePieceBpeTokenizerTests.Tokenizer("stories260K.gguf");
        foreach (string text in TokenizerTexts.EdgeCases)
        {
            Assert.Equal(gguf.Encode(text, addBos: true), Tok512.Value.Encode(text, addBos: true));
            Assert.Equal(gguf.Encode(text, addBos: false), Tok512.Value.Encode(text, addBos: false));
        }
        // llama2.c has no special-token syntax.
        Assert.Equal(gguf.Encode("a<s>b", true), Tok512.Value.Encode("a<s>b", true, parseSpecial: true));
    }

    /// <summary>llama2.c's one difference from llama.cpp: a character that is not a piece turns into byte tokens
    /// before merging, so it cannot merge into a longer piece ("xa" here, with no "x" piece).</summary>
    [Fact]
    public void UnknownCharacter_BecomesBytesBeforeMerging()
    {
        string path = WriteFile(pieces: ["a", "xa"], scores: [-1f, 0f]);
        try
        {
            var tok = Llama2cTokenizer.Load(path);
            int space = FindPiece(tok, " "), a = FindPiece(tok, "a"), xa = FindPiece(tok, "xa");
            Assert.Equal([Llama2cTokenizer.Bos, space, 3 + 'x', a], tok.Encode("xa", addBos: true));
            // llama.cpp's merging (what the GGUF tokenizer does) would build "xa".
            Assert.NotEqual(-1, xa);
            Assert.Equal("xa", TokenDecoder.Decode(tok, tok.Encode("xa", addBos: false)));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void VocabSize_ReadsExactlyThatMany()
    {
        Assert.Equal(300, Llama2cTokenizer.Load(Fixtures.StoriesTokenizerBin, vocabSize: 300).VocabSize);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cTokenizer.Load(Fixtures.StoriesTokenizerBin, vocabSize: 513));
        Assert.Equal("token 512", e.Item);
    }

    [Theory]
    [InlineData("truncated", "token 3")]
    [InlineData("negative length", "token 3")]
    [InlineData("length over max", "token 3")]
    [InlineData("invalid utf-8", "token 3")]
    [InlineData("header", "max_token_length")]
    public void MalformedFile_ThrowsModelFormatException(string damage, string item)
    {
        string path = WriteFile(pieces: ["a"], scores: [0f]);
        try
        {
            byte[] data = File.ReadAllBytes(path);
            int third = OffsetOfToken(data, 3);
            data = damage switch
            {
                "truncated" => data[..(third + 6)],
                "negative length" => Patch(data, third + 4, -5),
                "length over max" => Patch(data, third + 4, 1000),
                "invalid utf-8" => SetByte(data, third + 8, 0xFF),
                _ => Patch(data, 0, 0),
            };
            File.WriteAllBytes(path, data);
            var e = Assert.Throws<ModelFormatException>(() => Llama2cTokenizer.Load(path));
            Assert.Equal(item, e.Item);
            Assert.Equal(path, e.FilePath);
        }
        finally { File.Delete(path); }

        static byte[] Patch(byte[] d, int at, int value)
        {
            BitConverter.TryWriteBytes(d.AsSpan(at), value);
            return d;
        }
        static byte[] SetByte(byte[] d, int at, byte value)
        {
            d[at] = value;
            return d;
        }
    }

    private static int FindPiece(Llama2cTokenizer tok, string piece)
    {
        for (int i = 0; i < tok.VocabSize; i++) if (tok.Piece(i) == piece) return i;
        return -1;
    }

    private static int OffsetOfToken(byte[] data, int id)
    {
        int pos = 4;
        for (int i = 0; i < id; i++) pos += 8 + BitConverter.ToInt32(data, pos + 4);
        return pos;
    }

    /// <summary>A llama2.c tokenizer file: &lt;unk&gt;, BOS, EOS, the 256 byte tokens, " ", then the given pieces.</summary>
    private static string WriteFile(string[] pieces, float[] scores)
    {
        var all = new List<(string, float)> { ("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0) };
        for (int b = 0; b < 256; b++) all.Add(($"<0x{b:X2}>", 0));
        all.Add((" ", -2));
        all.AddRange(pieces.Zip(scores));
        string path = Path.Combine(Path.GetTempPath(), $"kvq-tok-{Guid.NewGuid():N}.bin");
        using var w = new BinaryWriter(File.Create(path));
        w.Write(all.Max(p => Encoding.UTF8.GetByteCount(p.Item1)));
        foreach (var (piece, score) in all)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(piece);
            w.Write(score);
            w.Write(bytes.Length);
            w.Write(bytes);
        }
        return path;
    }
}
