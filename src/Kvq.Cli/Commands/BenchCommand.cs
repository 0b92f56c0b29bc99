using System.CommandLine;
using Kvq.Bench;
using Kvq.Cli.Validation;

namespace Kvq.Cli.Commands;

/// <summary>kvq bench: prefill and decode speed and peak memory at a context length, on the CPU or a CUDA device
/// (the side-by-side run against llama.cpp is bench/Kvq.Bench, CPU only).</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var ctx = CheckedOption.Int("--ctx", "prompt length in tokens (at most the model's trained context, with --decode)", 512,
            ValueRange.Between(1, int.MaxValue), null, "-c");
        var decode = CheckedOption.Int("--decode", "tokens to decode after the prompt", 32, ValueRange.Between(1, int.MaxValue));
        var repetitions = CheckedOption.Int("--repetitions", "measured runs after the warm-up; the best is reported, with the spread of all",
            2, ValueRange.Between(1, 1000), null, "-r");
        var kv = CommonOptions.Kv();
        var maxPpl = KvAuto.MaxPplIncrease();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var policy = new KvPolicyOptions(grid: false);
        var offload = new KvOffloadOptions(grid: false);
        var device = new DeviceOptions();
        var sliding = new KvSlidingOption();
        var cmd = new Command("bench", "measure prefill tok/s, decode tok/s and peak memory") { ctx, decode, repetitions, kv, maxPpl, threads, json, profile, sink };
        model.AddTo(cmd);
        policy.AddTo(cmd);
        offload.AddTo(cmd);
        sliding.AddTo(cmd);
        device.AddTo(cmd);
        cmd.Subcommands.Add(BenchServeCommand.Create());
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var policies = policy.Parse(r);
            if (policies.Count > 1) throw new CliException("bench takes one --policy");
            var where = device.Parse(r, policies);
            var offloads = offload.Parse(r);
            GpuOffload.CheckOptions(where, offloads.Count > 0, r.GetValue(offload.Dir));
            sliding.Check(r, policies, offloads.Count > 0, r.GetValue(sink), where.Cuda);
            var path = model.Path(r);
            using var loaded = ModelOptions.Load(path, r.GetValue(model.Tokenizer));
            int c = r.GetValue(ctx), d = r.GetValue(decode);
            ContextOption.Check("--ctx", c, loaded.Weights.Config);
            ContextOption.Check($"--ctx {c} + --decode", (long)c + d, loaded.Weights.Config);
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var plain = KvProfileOptions.Config(r.GetValue(kv)!, prof, r.GetValue(sink), r.GetValue(maxPpl), loaded.Weights.Config.ContextLength);
            var config = sliding.Apply(r, offload.WithDir(r, plain with { Policy = policies[0], Offload = offloads.Count > 0 ? offloads[0] : null }));
            GpuOffload.CheckFormat(where, config, loaded.Weights.Config);
            var lm = where.Load(loaded.Weights, r.GetValue(threads));
            using var lmOwner = lm as IDisposable;
            DeviceChoice.Check(lm, config);
            // Warm-up as in bench/Kvq.Bench: enough work for the JIT's optimised tier, weights paged in (on a GPU:
            // kernels compiled or read from the cubin cache); then the best of the runs (two by default), so `kvq bench`
            // and the side-by-side tool report comparable figures.
            ThroughputBenchmark.WarmUp(lm, Path.GetFileName(path), c, config);
            var res = ThroughputBenchmark.Repeat(r.GetValue(repetitions), () =>
                ThroughputBenchmark.Run(lm, Path.GetFileName(path), c, config, d));
            if (r.GetValue(json)) Console.WriteLine(CliJson.Line(res));
            else
            {
                Console.WriteLine($"{res.Model} ctx {res.Ctx} kv {res.Kv} on {lm.Device}: prefill {res.PrefillTokS:F1} tok/s, " +
                                  $"decode {res.DecodeTokS:F1} tok/s, peak host memory {res.PeakMemoryBytes / 1048576.0:F1} MiB, " +
                                  $"KV {res.KvBytes / 1048576.0:F2} MiB of {where.MemoryKind} ({res.Machine})");
                Console.WriteLine($"over {res.Repetitions} runs (best above): prefill tok/s {res.PrefillSpread}; decode tok/s {res.DecodeSpread}");
            }
            return 0;
        }));
        return cmd;
    }
}
