using System.CommandLine;
using System.Globalization;
using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Cli.Validation;

namespace Kvq.Cli.Commands;

/// <summary>
/// <c>--kv auto</c>: the smallest KV format whose estimated perplexity increase stays within
/// <c>--max-ppl-increase</c>, from the calibration errors in the KVQuant profile (<see cref="KvQuantLossEstimate"/>).
/// The candidates are the formats the profile can estimate: nuq2/nuq3/nuq4 at each outlier fraction it was calibrated
/// for, uniform and :mixed (":rot" behind them for a profile from <c>kvq calibrate --rotate</c>); f16 (no error) when
/// none is within the bound. Size is KVQuant's bit accounting at the profile's head dim.
/// </summary>
public static class KvAuto
{
    public const string Name = "auto";
    public const double DefaultBound = 0.01;
    private const string Fallback = "f16";

    public static bool Is(string spec) => string.Equals(spec, Name, StringComparison.Ordinal);

    public static Option<double?> MaxPplIncrease() => CheckedOption.OptionalPercent("--max-ppl-increase",
        $"with --kv auto: the largest perplexity increase allowed, estimated from the profile's calibration errors (e.g. 2% " +
        $"or 0.02; default {Percent(DefaultBound)})", ValueRange.Above(0));

    /// <summary>One format the profile can estimate: its size and estimated perplexity increase (0.02 = +2%).</summary>
    public sealed record Candidate(string Spec, double BitsPerElement, double PplIncrease);

    /// <summary>The chosen format, the bound and every candidate, smallest first.</summary>
    public sealed record Choice(Candidate Chosen, double Bound, IReadOnlyList<Candidate> Candidates)
    {
        /// <summary>One line: what was chosen and why (the bound, and the next smaller format that missed it).</summary>
        public string Explain(KvQuantProfile profile)
        {
            // The best of the next size down: what a slightly looser bound would give.
            var smaller = Candidates.Where(c => c.BitsPerElement < Chosen.BitsPerElement - 1e-9)
                .OrderByDescending(c => c.BitsPerElement).ThenBy(c => c.PplIncrease).FirstOrDefault();
            string why = Chosen.Spec == Fallback
                ? $"no calibrated format is within +{Percent(Bound)} (the best, {Best().Spec}, is estimated at +{Percent(Best().PplIncrease)})"
                : $"estimated perplexity +{Percent(Chosen.PplIncrease)} <= +{Percent(Bound)}" +
                  (smaller == null ? "; the smallest format the profile knows"
                      : $"; the next smaller, {smaller.Spec} ({smaller.BitsPerElement:F2} bits), is estimated at +{Percent(smaller.PplIncrease)}");
            return $"--kv auto: {Chosen.Spec} ({Chosen.BitsPerElement:F2} bits/value): {why} (from the profile's calibration " +
                   $"errors: {profile.Settings.Samples} x {profile.Settings.Length} tokens of {profile.Settings.Text})";
        }

        private Candidate Best() => Candidates.Where(c => c.Spec != Fallback).MinBy(c => c.PplIncrease) ?? Chosen;
    }

    /// <summary>Picks the format; a <see cref="CliException"/> when there is no profile or it cannot estimate.</summary>
    public static Choice Choose(KvQuantProfile? profile, double? bound)
    {
        if (profile == null)
            throw new CliException("--kv auto picks a format from a calibration profile's errors: pass --profile P (from 'kvq calibrate'), " +
                                   "or name a format with --kv (kvq eval --list)");
        double b = bound ?? DefaultBound;
        var candidates = Candidates(profile);
        var chosen = candidates.Where(c => c.PplIncrease <= b).OrderBy(c => c.BitsPerElement).ThenBy(c => c.PplIncrease).First();
        return new Choice(chosen, b, candidates);
    }

    /// <summary>Every format the profile can estimate, smallest first, then f16.</summary>
    public static IReadOnlyList<Candidate> Candidates(KvQuantProfile profile)
    {
        bool rotKeys = RotatedSpec.ProfileRotates(profile.Settings.Text, KvSide.Key), rotValues = RotatedSpec.ProfileRotates(profile.Settings.Text, KvSide.Value);
        var list = new List<Candidate>();
        string? why = null;
        foreach (var cal in profile.Calibrations)
            foreach (int bits in new[] { 2, 3, 4 })
                foreach (bool mixed in new[] { false, true })
                {
                    var inner = $"{KvQuantSpec.Prefix}{bits}" + (cal.OutlierFraction > 0 ? "-" + KvQuantSpec.FormatFraction(cal.OutlierFraction) : "") +
                                (mixed ? ":mixed" : "");
                    string Side(bool rot) => rot ? inner + RotatedSpec.Suffix : inner;
                    var name = rotKeys == rotValues ? Side(rotKeys) : Side(rotKeys) + "/" + Side(rotValues);
                    double increase;
                    try
                    {
                        increase = KvQuantLossEstimate.PerplexityIncrease(profile, KvQuantSpec.TryParse(inner)!);
                    }
                    catch (KvSpecException e)
                    {
                        why ??= e.Message;
                        continue;
                    }
                    var config = KvCacheConfig.Parse(name) with { Profile = profile };
                    list.Add(new Candidate(name, KvQuantColumns.KvQuantBits(config, profile.HeadDim, profile.Layers), increase));
                }
        if (list.Count == 0)
            throw new CliException($"--kv auto: the profile cannot estimate any format's error: {why}");
        list.Sort((a, c) => a.BitsPerElement != c.BitsPerElement ? a.BitsPerElement.CompareTo(c.BitsPerElement) : a.PplIncrease.CompareTo(c.PplIncrease));
        list.Add(new Candidate(Fallback, 16, 0));
        return list;
    }

    private static string Percent(double x) => (x * 100).ToString(x * 100 >= 10 ? "0.#" : "0.###", CultureInfo.InvariantCulture) + "%";
}
