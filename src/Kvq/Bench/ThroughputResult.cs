namespace Kvq.Bench;

/// <summary>One `kvq bench` measurement (JSON names are read by other tools).</summary>
public sealed record ThroughputResult(
    string Engine, string Model, int Ctx, string Kv, int Threads, int DecodeTokens,
    double PrefillTokS, double DecodeTokS, long PeakMemoryBytes, long KvBytes, string Machine);
