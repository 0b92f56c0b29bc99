using System.CommandLine;

namespace Kvq.Cli.Validation;

/// <summary>--seed as llama.cpp takes it: a whole number, or -1 for a random seed, which is printed on stderr so the
/// run can be repeated.</summary>
public static class SeedOption
{
    public const long Random = -1;

    public static Option<long> Create(string description, long defaultValue) =>
        CheckedOption.Long("--seed", $"{description} (-1 = random, printed on stderr)", defaultValue, ValueRange.AtLeast(Random), "-1 = random");

    /// <summary>The seed to use: the value given, or for -1 a random one (said on <paramref name="log"/>).</summary>
    public static ulong Resolve(long value, TextWriter log)
    {
        if (value >= 0) return (ulong)value;
        var seed = System.Random.Shared.NextInt64(0, long.MaxValue);
        log.WriteLine($"kvq: seed {seed} (random, from --seed -1)");
        return (ulong)seed;
    }
}
