using Kvq.Tokenizers;

namespace Kvq.Tests.Tokenizers.HuggingFace;

/// <summary>
/// SentencePiece-style tokenizer.json (Llama 1/2, Mistral) against the GGUF tokenizer of the same vocabulary:
/// books-19m's pieces, scores and types exported as transformers exports a SentencePiece model (merges instead of
/// scores), loaded back with scores derived from the merge ranks, must give the GGUF tokenizer's ids.
/// </summary>
public class HfSentencePieceTests
{
    private const string Books = "books-19m.gguf";

    public static TheoryData<bool, bool> Variants() => new()
    {
        { false, true },  // legacy normalizer (Prepend + Replace), "a b" merges, tokenizer_config.json
        { true, false },  // Metaspace pre-tokenizer, [a, b] merges, no tokenizer_config.json (BOS from the template)
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void Vocabulary_TypesAndSpecialTokens_AreTheGgufs(bool metaspace, bool withConfig)
    {
        var hf = HfTestFiles.SentencePiece(Books, metaspace, withConfig);
        var gguf = HfTestFiles.SentencePieceGguf(Books);
        Assert.Equal(gguf.VocabSize, hf.VocabSize);
        Assert.Equal((gguf.BosId, gguf.EosId, gguf.UnknownId, gguf.AddBos, gguf.AddSpacePrefix),
            (hf.BosId, hf.EosId, hf.UnknownId, hf.AddBos, hf.AddSpacePrefix));
        for (int id = 0; id < gguf.VocabSize; id++)
        {
            Assert.Equal(gguf.Piece(id), hf.Piece(id));
            Assert.Equal(gguf.Type(id), hf.Type(id));
            Assert.Equal(gguf.IsEndOfGeneration(id), hf.IsEndOfGeneration(id));
            Assert.True(gguf.TokenBytes(id).SequenceEqual(hf.TokenBytes(id)), $"token {id} '{gguf.Piece(id)}' decodes differently");
        }
    }

    /// <summary>The derived scores order the merged pieces exactly as the SentencePiece scores do, and put single
    /// characters below all of them.</summary>
    [Fact]
    public void MergeRankScores_KeepTheSentencePieceScoreOrder()
    {
        var hf = HfTestFiles.SentencePiece(Books, metaspace: false, withConfig: true);
        var gguf = HfTestFiles.SentencePieceGguf(Books);
        var merged = Enumerable.Range(0, gguf.VocabSize)
            .Where(id => gguf.Type(id) == TokenType.Normal && gguf.Piece(id).EnumerateRunes().Count() > 1)
            .OrderByDescending(gguf.Score).ThenBy(id => id).ToArray();
        Assert.True(merged.Length > 7000);
        for (int i = 1; i < merged.Length; i++)
            Assert.True(hf.Score(merged[i - 1]) > hf.Score(merged[i]), $"'{hf.Piece(merged[i - 1])}' should outrank '{hf.Piece(merged[i])}'");
        float lowestMerged = hf.Score(merged[^1]);
        for (int id = 0; id < gguf.VocabSize; id++)
            if (gguf.Piece(id).EnumerateRunes().Count() == 1 || gguf.Type(id) != TokenType.Normal)
                Assert.True(hf.Score(id) < lowestMerged);

        // Control: equal scores for every piece (llama.cpp's own tokenizer.json path gives them all -1000, so pairs
        // merge leftmost first) tokenize the same text differently; the merge order is what the scores carry.
        int n = hf.VocabSize;
        var flat = new SentencePieceBpeTokenizer(
            new TokenVocabulary(Enumerable.Range(0, n).Select(hf.Piece).ToArray(), Enumerable.Repeat(-1000f, n).ToArray(),
                Enumerable.Range(0, n).Select(hf.Type).ToArray()),
            hf.BosId, hf.EosId, hf.UnknownId, addBos: true, addSpacePrefix: true, endOfGeneration: []);
        string text = TokenizerTexts.Read("tinystories/TinyStories-valid.first1000.txt")[..2000];
        Assert.Equal(gguf.Encode(text, true), hf.Encode(text, true));
        Assert.NotEqual(gguf.Encode(text, true), flat.Encode(text, true));
    }

    public static TheoryData<string, bool> Texts() => new()
    {
        { "tinystories/TinyStories-valid.first1000.txt", false },
        { "books/pg2489_moby_dick.txt", false },
        { "tinystories/TinyStories-valid.first1000.txt", true },
    };

    /// <summary>All of TinyStories' first 1000 stories, and 200,000 characters from the middle of Moby Dick.</summary>
    [Theory]
    [MemberData(nameof(Texts))]
    public void Text_GivesTheGgufTokenizersIds(string file, bool metaspace)
    {
        var hf = HfTestFiles.SentencePiece(Books, metaspace, withConfig: !metaspace);
        var gguf = HfTestFiles.SentencePieceGguf(Books);
        string text = TokenizerTexts.Read(file);
        if (text.Length > 200_000) text = text.Substring(text.Length / 2 - 100_000, 200_000);
        int[] expected = gguf.Encode(text, addBos: true);
        int[] ids = hf.Encode(text, hf.AddBos);
        SentencePieceBpeTokenizerTests.AssertSameTokens(expected, ids, hf);
        Assert.Equal(text, TokenDecoder.Decode(hf, ids.AsSpan(1)));
    }

    [Fact]
    public void EdgeCases_GiveTheGgufTokenizersIds()
    {
        var hf = HfTestFiles.SentencePiece(Books, metaspace: false, withConfig: true);
        var gguf = HfTestFiles.SentencePieceGguf(Books);
        foreach (string text in TokenizerTexts.EdgeCases)
            foreach (bool special in (bool[])[false, true])
                SentencePieceBpeTokenizerTests.AssertSameTokens(gguf.Encode(text, true, special), hf.Encode(text, true, special), hf);
        // The MANIFEST's sentence (the dummy prefix supplies the leading space).
        Assert.Equal([1, 579, 322, 261, 1205, 282, 6544, 1698, 881, 8107, 263, 2882, 1442, 292, 2177, 2456, 8082],
            hf.Encode("It was a dark and stormy night; the rain fell in torrents", hf.AddBos));
    }
}
