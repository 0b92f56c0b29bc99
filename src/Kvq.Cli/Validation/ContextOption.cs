using System.CommandLine;
using Kvq.Model;

namespace Kvq.Cli.Validation;

/// <summary>--ctx for commands that build a cache, and the one check against the context a model was trained on: past
/// it, positions the model never saw give garbage, so a longer window is refused (exit 2) rather than run.</summary>
public static class ContextOption
{
    public const int Min = 2;

    /// <summary>--ctx/-c with no fixed default: null means the model's trained context (<see cref="Resolve"/>).</summary>
    public static Option<int?> Create(string description) =>
        CheckedOption.OptionalInt("--ctx", $"{description} (default: the model's trained context)", ValueRange.Between(Min, int.MaxValue), null, "-c");

    /// <summary>The window to use: the value given (checked), else the model's trained context.</summary>
    public static int Resolve(int? given, ModelConfig config, string option = "--ctx")
    {
        if (given is not { } ctx) return config.ContextLength;
        Check(option, ctx, config);
        return ctx;
    }

    /// <summary>Refuses <paramref name="tokens"/> positions past the model's trained context, naming <paramref name="what"/>.</summary>
    public static void Check(string what, long tokens, ModelConfig config)
    {
        int max = config.ContextLength;
        if (tokens > max)
            throw new CliException($"{what} {tokens} is longer than the model's context ({max} tokens, the length it was trained on)");
    }
}
