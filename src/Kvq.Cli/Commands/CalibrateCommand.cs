using System.CommandLine;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Calibration.LowRank;
using Kvq.Cli.Validation;
using Kvq.Model;
using Kvq.Text;

namespace Kvq.Cli.Commands;

/// <summary>kvq calibrate: fit a KVQuant profile (per-channel key scales, NUQ codebooks) for a model on a text.</summary>
public static class CalibrateCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var text = new Option<string>("--text") { Description = "UTF-8 calibration text (BOM dropped, CRLF -> LF)", Required = true };
        var samples = CheckedOption.Int("--samples", "calibration windows", 16, ValueRange.Between(1, int.MaxValue));
        var length = CheckedOption.Int("--length", "tokens per window (BOS + length-1 text tokens; at most the model's trained context)", 2048, ValueRange.Between(2, int.MaxValue));
        var outliers = new Option<string>("--outliers")
        {
            Description = "outlier fractions to calibrate, comma-separated (dense-only is always calibrated too), e.g. 1% or 0.5%,1%",
            DefaultValueFactory = _ => "1%",
        };
        var sink = CheckedOption.Int("--sink", "leading tokens of each window left out (attention sinks, kept exact at inference)", 1, ValueRange.Between(0, int.MaxValue));
        var seed = SeedOption.Create("seed of the window choice and of k-means", 0);
        var noFisher = new Option<bool>("--no-fisher") { Description = "weight k-means uniformly instead of by Fisher information" };
        var lowRank = new Option<bool>("--lowrank")
        {
            Description = "also fit low-rank bases (all principal directions of pre-RoPE keys and of values per layer and KV head) for the lrR+FORMAT formats",
        };
        var lowRankNuq = new Option<string?>("--lowrank-nuq")
        {
            Description = "ranks whose key latent gets a KVQuant calibration (per-channel scales, codebooks) for lrR+nuq*, comma-separated, e.g. 32,16 (implies --lowrank)",
        };
        var rotate = new Option<string?>("--rotate")
        {
            Description = "fit on Hadamard-rotated keys and values (each KV head over the head dim), for the nuqB:rot formats; " +
                          "'--rotate auto': fit plain and rotated and keep, per layer and side, the one with the lower calibration error " +
                          "(the profile records the choice; plain nuqB formats then use it)",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var rotateSide = new Option<string?>("--rotate-side")
        {
            Description = "with --rotate: the side fitted rotated, keys (for nuqB:rot/nuqB), values (nuqB/nuqB:rot) or both (default)",
        };
        var valueMargin = CheckedOption.Float("--value-margin",
            "per-token outlier margin (half-ranges of the rest) the value codebooks are fitted at; recorded in the profile, and nuq specs without :marginM split at it",
            KvQuantSpec.ValueOutlierMargin, new ValueRange(0, 100, MinOpen: true));
        var output = new Option<string>("--out", "-o") { Description = "profile file to write", Required = true };
        var threads = CommonOptions.Threads();
        var cmd = new Command("calibrate", "calibrate KVQuant (nuq2/3/4) for a model: per-channel key scales and codebooks")
        {
            text, samples, length, outliers, sink, seed, noFisher, lowRank, lowRankNuq, rotate, rotateSide, valueMargin, output, threads,
        };
        model.AddTo(cmd);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var (rotated, auto) = ParseRotate(r.GetResult(rotate) != null, r.GetValue(rotate));
            if (auto && !string.IsNullOrWhiteSpace(r.GetValue(rotateSide)))
                throw new CliException("--rotate auto chooses the side (and layer) itself: leave out --rotate-side");
            var sides = ParseRotateSide(r.GetValue(rotateSide), rotated);
            if ((rotated || auto) && (r.GetValue(lowRank) || !string.IsNullOrWhiteSpace(r.GetValue(lowRankNuq))))
                throw new CliException("--rotate fits the rotated channels; low-rank bases (--lowrank, --lowrank-nuq) need the plain ones: calibrate them apart");
            var textPath = r.GetValue(text)!;
            TextInput.Check(textPath, "--text", Console.Error);
            // Before the calibration's minutes of work, not after: a profile that cannot be written is found out now.
            OutputFile.Check("--out", r.GetValue(output)!);
            var fractions = ParseFractions(r.GetValue(outliers)!);
            int sinkTokens = r.GetValue(sink), len = r.GetValue(length);
            // Checked here, not in a command validator: validators see 0 for options left at their defaults.
            if (sinkTokens >= len)
                throw new CliException($"--sink {sinkTokens} leaves nothing to calibrate in windows of --length {len}: give a sink below the length");
            bool fisher = !r.GetValue(noFisher);
            var modelPath = model.Path(r);
            using var loaded = ModelOptions.Load(modelPath, r.GetValue(model.Tokenizer));
            ContextOption.Check("--length", len, loaded.Weights.Config);
            int nThreads = r.GetValue(threads);
            var transformer = new Transformer(loaded.Weights, new Tensors.Parallelism(nThreads));
            var content = TextNormalizer.ReadNormalized(textPath);
            var options = new KvQuantCalibrateOptions(r.GetValue(samples), len, fractions, sinkTokens, SeedOption.Resolve(r.GetValue(seed), Console.Error), nThreads)
            {
                Fisher = fisher,
                RotateSides = sides,
                RotateAuto = auto,
                ValueMargin = r.GetValue(valueMargin),
                LowRank = r.GetValue(lowRank),
                LatentRanks = ParseRanks(r.GetValue(lowRankNuq), transformer.KvShape.HeadDim),
            };
            var result = Progress.RunPhases(p => KvQuantCalibrator.Calibrate(transformer, content, Path.GetFileName(textPath), loaded.Tokenizer, options, p));
            var profile = result.Profile;
            string lowRankNote = "";
            if (profile.LowRank is { } bases)
            {
                int hd = bases.HeadDim;
                lowRankNote = $"; low-rank bases: key variance kept at rank {hd / 2} / {hd / 4} = {bases.MeanEnergy(Cache.Codecs.KvSide.Key, hd / 2):P1} / " +
                              $"{bases.MeanEnergy(Cache.Codecs.KvSide.Key, hd / 4):P1}, values {bases.MeanEnergy(Cache.Codecs.KvSide.Value, hd / 2):P1} / " +
                              $"{bases.MeanEnergy(Cache.Codecs.KvSide.Value, hd / 4):P1} (mean over layers and heads)";
            }
            var outPath = r.GetValue(output)!;
            profile.Save(outPath);
            Console.WriteLine($"wrote {outPath}: model {Path.GetFileName(modelPath)} ({profile.ModelFingerprint}), text {Path.GetFileName(textPath)}, " +
                              $"{options.Samples} x {options.Length} tokens (sink {sinkTokens}), outliers " +
                              $"{string.Join(", ", profile.Calibrations.Select(c => c.OutlierFraction == 0 ? "0%" : KvQuantSpec.FormatFraction(c.OutlierFraction)))}, " +
                              $"Fisher {(fisher ? "on" : "off")}, seed {options.Seed}{(options.ValueMargin != KvQuantSpec.ValueOutlierMargin ? $", value margin {options.ValueMargin}" : "")}{(rotated ? ", Hadamard-rotated " + (sides == KvRotationSides.Both ? "keys and values" : sides == KvRotationSides.Keys ? "keys" : "values") : "")}; " +
                              $"{result.Activations.TotalSeconds:F1} s activations, {result.Fit.TotalSeconds:F1} s fit{lowRankNote}");
            if (auto)
                foreach (var c in profile.Calibrations)
                    Console.WriteLine($"--rotate auto, {(c.OutlierFraction == 0 ? "dense" : KvQuantSpec.FormatFraction(c.OutlierFraction) + " outliers")}: " +
                                      $"keys rotated in layers {Layers(c.RotatedLayers(Cache.Codecs.KvSide.Key))}, values in {Layers(c.RotatedLayers(Cache.Codecs.KvSide.Value))}");
            return 0;
        }));
        return cmd;
    }

    private static string Layers(int[] layers) => layers.Length == 0 ? "none" : string.Join(", ", layers);

    /// <summary>(fit rotated, choose per layer) from --rotate [auto|all].</summary>
    private static (bool Rotated, bool Auto) ParseRotate(bool given, string? value)
    {
        if (!given) return (false, false);
        return value?.Trim().ToLowerInvariant() switch
        {
            null or "" or "all" => (true, false),
            "auto" => (false, true),
            _ => throw new CliException($"--rotate '{value}': expected no value (every layer rotated), 'all' or 'auto' (chosen per layer and side)"),
        };
    }

    private static KvRotationSides ParseRotateSide(string? text, bool rotated)
    {
        if (string.IsNullOrWhiteSpace(text)) return rotated ? KvRotationSides.Both : KvRotationSides.None;
        if (!rotated) throw new CliException($"--rotate-side {text} needs --rotate");
        return text.Trim().ToLowerInvariant() switch
        {
            "keys" => KvRotationSides.Keys,
            "values" => KvRotationSides.Values,
            "both" => KvRotationSides.Both,
            _ => throw new CliException($"--rotate-side '{text}': expected keys, values or both"),
        };
    }

    private static List<int> ParseRanks(string? text, int headDim)
    {
        var list = new List<int>();
        if (string.IsNullOrWhiteSpace(text)) return list;
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int rank)
                || rank < LatentCalibration.MinRank || rank > headDim)
                throw new CliException($"--lowrank-nuq: rank '{part}' must be a whole number in [{LatentCalibration.MinRank}, {headDim}] (the model's head dim)");
            list.Add(rank);
        }
        return list;
    }

    private static List<double> ParseFractions(string text)
    {
        var list = new List<double>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (part is "0" or "0%") continue;
            try
            {
                list.Add(KvQuantSpec.ParseFraction(part, "--outliers"));
            }
            catch (Cache.KvSpecException e)
            {
                throw new CliException(e.Message);
            }
        }
        return list;
    }
}
