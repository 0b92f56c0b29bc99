namespace Kvq.Bench;

/// <summary>One `kvq bench` measurement (JSON names are read by other tools). PrefillCpuS / DecodeCpuS: the process's
/// CPU time (all threads) over each phase: on a shared machine wall-clock rates move with the load, while CPU time at
/// one thread stays close to the work done (with several threads it also counts spin-waiting). Device: where the model
/// ran (<see cref="Model.ILanguageModel.Device"/>; null for the peer); with a GPU model KvBytes are device memory.
/// With repetitions, the figures are the best run's and the spreads say how the runs varied.</summary>
public sealed record ThroughputResult(
    string Engine, string Model, int Ctx, string Kv, int Threads, int DecodeTokens,
    double PrefillTokS, double DecodeTokS, long PeakMemoryBytes, long KvBytes, string Machine,
    double PrefillCpuS = 0, double DecodeCpuS = 0, string? Device = null)
{
    /// <summary>Runs measured (the figures above are the best of them); 1 when not repeated.</summary>
    public int Repetitions { get; init; } = 1;
    /// <summary>Prefill and decode tok/s over the <see cref="Repetitions"/> runs; null when not repeated.</summary>
    public Spread? PrefillSpread { get; init; }
    public Spread? DecodeSpread { get; init; }
}
