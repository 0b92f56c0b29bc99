using Kvq.Formats.Gguf;
using Kvq.LlamaCpp;
using Kvq.Tokenizers;
using Xunit.Abstractions;

namespace Kvq.Tests.Tokenizers;

/// <summary>
/// The families' byte-level BPE vocabularies (llama-bpe for Llama 3, qwen2 for Qwen2/3; learned from tinyshakespeare by
/// <see cref="TrainedBpeVocabulary"/>) in a llama3 and a qwen3 model: Kvq's tokenizer from the GGUF against llama.cpp's,
/// token for token, on text the merges were not learned from (every shared text's first 6,000 characters and the edge
/// cases: digits, spaces, contractions, unicode).
/// </summary>
public class SyntheticBpeVsLlamaCppTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Cases()
    {
        var d = new TheoryData<string, string>();
        foreach (var family in new[] { "llama3", "qwen3" })
            foreach (string f in TokenizerTexts.Files()) d.Add(family, f);
        return d;
    }

    private static string ModelPath(string family)
    {
        var v = SyntheticFixtures.Vocabs;
        var spec = SyntheticFixtures.Spec(family);
        var vocab = family == "llama3" ? v.Llama3Bpe! : v.Qwen2Bpe!;
        return SyntheticFixtures.Write(spec with { Name = family + "-bpe", Vocabulary = vocab });
    }

    private void Compare(string family, string text, string what)
    {
        var path = ModelPath(family);
        using var peer = new LlamaCppModel(path);
        using var gguf = GgufFile.Open(path);
        var ours = TokenizerFactory.FromGguf(gguf);
        Assert.Equal(family == "llama3", ours.AddBos);
        var expected = peer.Tokenize(text, addBos: ours.AddBos);
        var actual = ours.Encode(text, addBos: ours.AddBos);
        output.WriteLine($"{family} {what}: {expected.Length} tokens ({text.Length} characters)");
        Assert.Equal(expected, actual);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void TokensMatchLlamaCppOnRealText(string family, string file)
    {
        var text = TokenizerTexts.Read(file);
        Compare(family, text[..Math.Min(text.Length, 6000)], file);
    }

    [Fact]
    public void TokensMatchLlamaCppOnEdgeCases()
    {
        foreach (var family in new[] { "llama3", "qwen3" })
            for (int i = 0; i < TokenizerTexts.EdgeCases.Length; i++)
                Compare(family, TokenizerTexts.EdgeCases[i], $"edge case {i}");
    }

    [Fact]
    public void VocabulariesHaveMergedWordsAndTheirSpecials()
    {
        var llama = (TrainedBpeVocabulary)SyntheticFixtures.Vocabs.Llama3Bpe!;
        var qwen = (TrainedBpeVocabulary)SyntheticFixtures.Vocabs.Qwen2Bpe!;
        Assert.Equal(700, llama.Merges.Count);
        Assert.Contains("Ġthe", llama.Tokens);   // " the": a space-led word merged whole
        Assert.Equal("<|begin_of_text|>", llama.Tokens[llama.Count - 5]);
        Assert.Equal("<|endoftext|>", qwen.Tokens[qwen.Count - 3]);
    }
}
