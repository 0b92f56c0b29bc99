using Kvq.Tokenizers;

namespace Kvq.Tests.Tokenizers.HuggingFace;

/// <summary>
/// Byte-level tokenizer.json (GPT-2, Llama 3, Qwen2) against the GGUF-built <see cref="Gpt2BpeTokenizer"/> of the
/// same vocabulary: the GPT-2-style test vocabulary written as tokenizer.json with each family's pre-tokenizer must
/// be recognised as that pre type and give the same ids (the GGUF tokenizers are checked against llama.cpp in
/// <see cref="Gpt2BpeTokenizerTests"/>).
/// </summary>
public class HfByteLevelTests
{
    private const int SliceChars = 30_000;

    public static TheoryData<string> PreTypes() => new() { "gpt-2", "llama-bpe", "qwen2" };

    public static TheoryData<string, string> PreTypesAndFiles()
    {
        var data = new TheoryData<string, string>();
        foreach (var pre in PreTypes())
            foreach (var file in TokenizerTexts.Files())
                data.Add(pre, file);
        return data;
    }

    [Theory]
    [InlineData("gpt-2", BpePreTokenizer.Gpt2)]
    [InlineData("llama-bpe", BpePreTokenizer.Llama3)]
    [InlineData("qwen2", BpePreTokenizer.Qwen2)]
    public void Vocabulary_TypesAndSpecialTokens_AreTheGgufs(string pre, BpePreTokenizer expected)
    {
        var hf = HfTestFiles.ByteLevel(pre);
        var gguf = HfTestFiles.ByteLevelGguf(pre);
        Assert.Equal(expected, hf.PreTokenizer);
        Assert.Equal(gguf.PreTokenizer, hf.PreTokenizer);
        Assert.Equal(gguf.MergeCount, hf.MergeCount);
        Assert.Equal(gguf.VocabSize, hf.VocabSize);
        Assert.Equal((gguf.BosId, gguf.EosId, gguf.AddBos, gguf.AddSpacePrefix), (hf.BosId, hf.EosId, hf.AddBos, hf.AddSpacePrefix));
        Assert.Equal(pre == "llama-bpe", hf.AddBos); // from the template: Llama 3 puts <|begin_of_text|> first
        for (int id = 0; id < gguf.VocabSize; id++)
        {
            Assert.Equal(gguf.Piece(id), hf.Piece(id));
            Assert.Equal(gguf.Type(id), hf.Type(id));
            Assert.Equal(gguf.IsEndOfGeneration(id), hf.IsEndOfGeneration(id));
            Assert.True(gguf.TokenBytes(id).SequenceEqual(hf.TokenBytes(id)), $"token {id} decodes differently");
        }
    }

    /// <summary>A 30,000-character slice from the middle of every text file, for each pre-tokenizer.</summary>
    [Theory]
    [MemberData(nameof(PreTypesAndFiles))]
    public void TextSlice_GivesTheGgufTokenizersIds(string pre, string file)
    {
        var hf = HfTestFiles.ByteLevel(pre);
        var gguf = HfTestFiles.ByteLevelGguf(pre);
        string text = TokenizerTexts.Read(file);
        int start = Math.Max(0, text.Length / 2 - SliceChars / 2);
        string slice = text.Substring(start, Math.Min(SliceChars, text.Length - start));
        int[] ids = hf.Encode(slice, hf.AddBos);
        SentencePieceBpeTokenizerTests.AssertSameTokens(gguf.Encode(slice, gguf.AddBos), ids, hf);
        Assert.Equal(slice, TokenDecoder.Decode(hf, ids));
    }

    [Theory]
    [MemberData(nameof(PreTypes))]
    public void EdgeCases_GiveTheGgufTokenizersIds(string pre)
    {
        var hf = HfTestFiles.ByteLevel(pre);
        var gguf = HfTestFiles.ByteLevelGguf(pre);
        foreach (string text in TokenizerTexts.EdgeCases)
            foreach (bool special in (bool[])[false, true])
                SentencePieceBpeTokenizerTests.AssertSameTokens(gguf.Encode(text, gguf.AddBos, special), hf.Encode(text, hf.AddBos, special), hf);
    }

    /// <summary>The pre-tokenizer really is in force: digits and words split as each family splits them.</summary>
    [Fact]
    public void PreTokenizers_SplitDigitsTheirOwnWay()
    {
        const string text = "in 2024 zzqxj";
        string Pieces(string pre) => string.Join("|", HfTestFiles.ByteLevel(pre).Encode(text, false).Select(HfTestFiles.ByteLevel(pre).Piece));
        Assert.Equal("in|\u01202024|\u0120z|z|q|x|j", Pieces("gpt-2"));        // the space goes with the digit run
        Assert.Equal("in|\u0120|202|4|\u0120zzqxj", Pieces("llama-bpe"));     // threes; a whole-word piece without merges
        Assert.Equal("in|\u0120|2|0|2|4|\u0120z|z|q|x|j", Pieces("qwen2"));   // single digits
    }
}
