namespace Kvq.Eval;

/// <summary>One row of `kvq eval kl`: a cache format's next-token distributions against the reference cache's on the same windows.</summary>
/// <param name="MeanKl">Mean over scored positions of KL(reference || candidate), nats.</param>
/// <param name="Top1Agreement">Fraction of scored positions where both runs' most likely next token is the same.</param>
/// <param name="Ppl">Perplexity of the candidate run on the same positions; <paramref name="ReferencePpl"/> of the reference run.</param>
/// <param name="Tokens">Scored positions (windows x (ctx-1)).</param>
/// <param name="P99Kl">99th percentile of the per-position KL (linear interpolation), nats; <paramref name="P999Kl"/> the
/// 99.9th; <paramref name="MaxKl"/> the largest. The tail shows the rare positions where the cache changes the
/// prediction, which a mean over mostly easy tokens hides.</param>
public sealed record KlResult(string Kv, string Reference, double MeanKl, double Top1Agreement, double Ppl, double ReferencePpl,
    long Tokens, int Windows, int Ctx, double BitsPerElement, double KvBytesPerToken, double Seconds,
    double P99Kl, double P999Kl, double MaxKl);
