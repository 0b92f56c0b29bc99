namespace Kvq.Tokenizers.HuggingFace;

/// <summary>What a model's config.json tells its tokenizer: the vocabulary is padded to <paramref name="VocabSize"/>, and
/// <paramref name="BosTokenId"/> / <paramref name="EosTokenIds"/> fill in what the tokenizer files leave open (every eos
/// id ends generation).</summary>
public sealed record HfModelTokens(int VocabSize, int? BosTokenId, int[] EosTokenIds);
