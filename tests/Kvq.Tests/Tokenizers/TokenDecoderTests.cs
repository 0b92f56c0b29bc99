using System.Text;
using Kvq.Tokenizers;
using LLama;

namespace Kvq.Tests.Tokenizers;

public class TokenDecoderTests
{
    private static SentencePieceBpeTokenizer Books => SentencePieceBpeTokenizerTests.Tokenizer("books-19m.gguf");
    private static Gpt2BpeTokenizer Gpt2 => Gpt2BpeTokenizerTests.Tokenizer("llama-bpe");

    private static string Stream(ITokenizer tok, IEnumerable<int> tokens, bool atSequenceStart)
    {
        var decoder = new TokenDecoder(tok, atSequenceStart);
        var sb = new StringBuilder();
        foreach (int t in tokens) sb.Append(decoder.Add(t));
        return sb.Append(decoder.Flush()).ToString();
    }

    /// <summary>Token sequences whose characters are often split over byte tokens: some texts' tokens, the byte
    /// tokens of random multi-byte characters, stray bytes (invalid UTF-8), control tokens and random ids.</summary>
    private static List<int[]> RandomSequences(ITokenizer tok, Func<byte, int> byteToken, int seed)
    {
        var rng = new Random(seed);
        string[] chars = ["é", "ß", "€", "中", "😀", "👍🏽", "𝐀", "\u0301", "a", " ", "\n"];
        var sequences = new List<int[]>();
        for (int trial = 0; trial < 400; trial++)
        {
            var ids = new List<int>();
            if (rng.Next(3) == 0) ids.Add(tok.BosId);
            int parts = rng.Next(0, 12);
            for (int p = 0; p < parts; p++)
            {
                switch (rng.Next(5))
                {
                    case 0: ids.AddRange(tok.Encode(TokenizerTexts.EdgeCases[rng.Next(TokenizerTexts.EdgeCases.Length)], false)); break;
                    case 1:
                        foreach (byte b in Encoding.UTF8.GetBytes(chars[rng.Next(chars.Length)])) ids.Add(byteToken(b));
                        break;
                    case 2: ids.Add(byteToken((byte)rng.Next(0x80, 0x100))); break; // a lone non-ASCII byte
                    case 3: ids.Add(rng.Next(tok.VocabSize)); break;
                    default: ids.Add(tok.EosId); break;
                }
            }
            sequences.Add([.. ids]);
        }
        return sequences;
    }

    public static TheoryData<string> Tokenizers() => new() { "books-19m.gguf", "gpt2 llama-bpe" };

    private static (ITokenizer Tok, Func<byte, int> ByteToken) Pick(string name) => name == "books-19m.gguf"
        ? (Books, b => 3 + b)
        : (Gpt2, b => Gpt2.Encode(((char)b).ToString(), false) is [var id] && b < 0x80 ? id : ByteLevelToken(b));

    /// <summary>GPT-2's single-byte token for any byte value: its piece is the byte's byte-level character.</summary>
    private static int ByteLevelToken(byte b)
    {
        int n = 0;
        for (int x = 0; x < 256; x++)
        {
            bool printable = x is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            char c = printable ? (char)x : (char)(256 + n++);
            if (x == b) return Array.IndexOf(Gpt2TestModel.Pieces, c.ToString());
        }
        throw new InvalidOperationException();
    }

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Streaming_GivesTheSameTextAsWholeDecoding(string name)
    {
        var (tok, byteToken) = Pick(name);
        foreach (int[] ids in RandomSequences(tok, byteToken, seed: 42))
        {
            Assert.Equal(TokenDecoder.Decode(tok, ids), Stream(tok, ids, atSequenceStart: true));
            var raw = ids.SelectMany(t => tok.TokenBytes(t).ToArray()).ToArray();
            Assert.Equal(Encoding.UTF8.GetString(raw), Stream(tok, ids, atSequenceStart: false));
        }
    }

    /// <summary>What llama.cpp streams: LLamaSharp's StreamingTokenDecoder over llama_token_to_piece.</summary>
    [Fact]
    public void Streaming_MatchesLlamaSharpStreamingDecoder()
    {
        var llama = SentencePieceBpeTokenizerTests.Oracle("books-19m.gguf");
        foreach (int[] ids in RandomSequences(Books, b => 3 + b, seed: 7))
        {
            var theirs = new StreamingTokenDecoder(Encoding.UTF8, llama.Weights);
            var ours = new TokenDecoder(Books);
            var a = new StringBuilder();
            var b = new StringBuilder();
            foreach (int t in ids)
            {
                theirs.Add(t);
                a.Append(theirs.Read());
                b.Append(ours.Add(t));
            }
            Assert.Equal(a.ToString(), b.ToString());
        }
    }

    [Fact]
    public void IncompleteCharacter_IsHeldBackUntilItCompletes()
    {
        var decoder = new TokenDecoder(Books);
        Assert.Equal("", decoder.Add(3 + 0xF0));  // 😀 = F0 9F 98 80
        Assert.Equal("", decoder.Add(3 + 0x9F));
        Assert.Equal("", decoder.Add(3 + 0x98));
        Assert.Equal("😀", decoder.Add(3 + 0x80));
        Assert.Equal("", decoder.Add(3 + 0xC3));
        Assert.Equal("\uFFFD", decoder.Flush());  // é cut off after its first byte
    }

    [Fact]
    public void LeadingSpace_DroppedOnlyAtSequenceStartWithoutBos()
    {
        int[] hello = Books.Encode("Hello world", addBos: false);  // '▁Hello' '▁world'
        Assert.Equal("Hello world", TokenDecoder.Decode(Books, hello));
        Assert.Equal(" Hello world", TokenDecoder.Decode(Books, [Books.BosId, .. hello]));
        Assert.Equal("Hello world", Stream(Books, hello, atSequenceStart: true));
        Assert.Equal(" Hello world", Stream(Books, hello, atSequenceStart: false)); // continuing a prompt
        int[] gpt2 = Gpt2.Encode(" Hello world", addBos: false);
        Assert.Equal(" Hello world", TokenDecoder.Decode(Gpt2, gpt2));           // byte-level BPE adds no prefix
    }
}
