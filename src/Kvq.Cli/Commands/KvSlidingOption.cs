using System.CommandLine;
using Kvq.Cache;
using Kvq.Cache.Policies;

namespace Kvq.Cli.Commands;

/// <summary>--sliding full|ring for commands that build a host KV cache: how sliding-window layers (Gemma 2/3, Mistral's
/// window) store their tokens (<see cref="KvCacheConfig.SlidingRing"/>). Checked before any model is loaded where the
/// command line alone decides it; what the cache itself refuses (a staging codec) is a KvSpecException, also exit 2.</summary>
public sealed class KvSlidingOption
{
    public Option<string> Option { get; } = new("--sliding")
    {
        Description = "sliding-window layers: full keeps every token (default); ring keeps only the blocks each layer's window can still see, " +
                      "so its memory stops growing at the window (same logits). ring does not combine with --policy, --offload-budget, --sink, " +
                      "kivi formats, --device cuda or sessions; models without sliding-window layers are unchanged",
        DefaultValueFactory = _ => "full",
    };

    public void AddTo(Command cmd) => cmd.Add(Option);

    /// <summary>Whether --sliding ring was given; a value other than full or ring is a <see cref="CliException"/>.</summary>
    public bool Ring(ParseResult r) => Parse(r.GetValue(Option));

    public static bool Parse(string? value) => value switch
    {
        null or "full" => false,
        "ring" => true,
        _ => throw new CliException($"--sliding {value}: expected full (every token) or ring (only what the window sees)"),
    };

    /// <summary>Refuses, before the model loads, what rings do not combine with on the command line.</summary>
    /// <param name="policies">The --policy configs (null entries: none).</param>
    public void Check(ParseResult r, IReadOnlyList<KvPolicyConfig?> policies, bool offload, int? sink, bool cuda, bool session = false)
    {
        if (!Ring(r)) return;
        string? conflict = policies.FirstOrDefault(p => p != null) is { } p ? $"--policy {p.Name}"
            : offload ? "--offload-budget"
            : sink is > 0 ? $"--sink {sink}"
            : cuda ? "--device cuda (the CUDA backend runs no sliding-window models)"
            : session ? "--save-session/--load-session (a sequence with rings cannot be saved yet)"
            : null;
        if (conflict != null) throw new CliException($"--sliding ring does not combine with {conflict} yet");
    }

    /// <summary>The config with <see cref="KvCacheConfig.SlidingRing"/> set from --sliding.</summary>
    public KvCacheConfig Apply(ParseResult r, KvCacheConfig config) => Ring(r) ? config with { SlidingRing = true } : config;
}
