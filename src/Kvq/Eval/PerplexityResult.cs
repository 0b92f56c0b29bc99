namespace Kvq.Eval;

/// <summary>One row of `kvq eval ppl`: field names are read by other tools (kv, ppl, tokens, bits_per_element, kv_bytes_per_token).</summary>
/// <param name="Stride">0 for non-overlapping windows; else the sliding windows' step (only the last Stride positions scored).</param>
public sealed record PerplexityResult(string Kv, double Ppl, long Tokens, int Windows, int Ctx, double BitsPerElement,
    double KvBytesPerToken, double Seconds, int Stride = 0);
