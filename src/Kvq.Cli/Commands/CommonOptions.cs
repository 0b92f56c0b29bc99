using System.CommandLine;
using Kvq.Cli.Validation;

namespace Kvq.Cli.Commands;

/// <summary>Options shared by several commands, with one definition each.</summary>
public static class CommonOptions
{
    public static Option<string?> Model() => new("--model", "-m")
    {
        Description = "model file: GGUF, llama2.c .bin, or a Hugging Face folder (default: ../shared/models/books-19m.gguf)",
    };

    /// <summary>At most this many threads per core: more only adds switching (1000 threads on 2 cores was accepted).</summary>
    public const int MaxThreadsPerCore = 4;

    public static Option<int> Threads() => CheckedOption.Int("--threads", "CPU threads (default: the number of cores)", Environment.ProcessorCount,
        ValueRange.Between(1, MaxThreadsPerCore * Environment.ProcessorCount), $"up to {MaxThreadsPerCore} x the {Environment.ProcessorCount} cores", "-t");

    public static Option<string> Kv() => new("--kv")
    {
        Description = "KV cache format for keys and values (f32, f16, bf16, q8_0, q4_0, int8, int4, int2, kivi2, kivi4, nuq3-1%, ...; " +
                      "auto: the smallest calibrated format within --max-ppl-increase, from --profile)",
        DefaultValueFactory = _ => "f16",
    };

    public static Option<bool> Json() => new("--json") { Description = "print JSON instead of text" };
}
