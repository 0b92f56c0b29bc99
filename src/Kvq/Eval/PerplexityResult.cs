namespace Kvq.Eval;

/// <summary>One row of `kvq eval ppl`: field names are read by other tools (kv, ppl, tokens, bits_per_element, kv_bytes_per_token).</summary>
public sealed record PerplexityResult(string Kv, double Ppl, long Tokens, int Windows, int Ctx, double BitsPerElement,
    double KvBytesPerToken, double Seconds);
