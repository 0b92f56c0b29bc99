namespace Kvq.Eval;

/// <summary>One row of `kvq eval recall`: perplexity of a passage's first and second copy with a filler between them.</summary>
/// <param name="FirstCopyPpl">exp(mean NLL) over every sample's first-copy tokens (the passage read cold).</param>
/// <param name="SecondCopyPpl">The same over the second copy, which the model can copy from <paramref name="FillerTokens"/>+passage tokens back.</param>
/// <param name="Tokens">Scored tokens per copy (samples x passage).</param>
public sealed record CopyRecallResult(string Kv, int FillerTokens, int PassageTokens, int Samples, double FirstCopyPpl,
    double SecondCopyPpl, long Tokens, double BitsPerElement, double KvBytesPerToken, double Seconds);
