using System.CommandLine;

namespace Kvq.Cli.Commands;

/// <summary>Options shared by several commands, with one definition each.</summary>
public static class CommonOptions
{
    public static Option<string?> Model() => new("--model", "-m")
    {
        Description = "model file: GGUF, llama2.c .bin, or a Hugging Face folder (default: ../shared/models/books-19m.gguf)",
    };

    public static Option<int> Threads() => new("--threads", "-t")
    {
        Description = "CPU threads",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    };

    public static Option<string> Kv() => new("--kv")
    {
        Description = "KV cache format for keys and values (f32, f16, bf16, q8_0, q4_0, int8, int4, int2, kivi2, kivi4, ...)",
        DefaultValueFactory = _ => "f32",
    };

    public static Option<bool> Json() => new("--json") { Description = "print JSON instead of text" };
}
