using System.CommandLine;
using Kvq.Bench;
using Kvq.Model;

namespace Kvq.Cli.Commands;

/// <summary>kvq bench: prefill and decode speed and peak memory at a context length, on the CPU or a CUDA device
/// (the side-by-side run against llama.cpp is bench/Kvq.Bench, CPU only).</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var ctx = new Option<int>("--ctx", "-c") { Description = "prompt length in tokens", DefaultValueFactory = _ => 512 };
        var decode = new Option<int>("--decode") { Description = "tokens to decode after the prompt", DefaultValueFactory = _ => 32 };
        var kv = CommonOptions.Kv();
        kv.DefaultValueFactory = _ => "f16";
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var policy = new KvPolicyOptions(grid: false);
        var device = new DeviceOptions();
        var cmd = new Command("bench", "measure prefill tok/s, decode tok/s and peak memory") { model, ctx, decode, kv, threads, json, profile, sink };
        policy.AddTo(cmd);
        device.AddTo(cmd);
        cmd.Subcommands.Add(BenchServeCommand.Create());
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var policies = policy.Parse(r);
            if (policies.Count > 1) throw new CliException("bench takes one --policy");
            var where = device.Parse(r, policies);
            var path = DefaultPaths.ResolveModel(r.GetValue(model));
            using var loaded = ModelLoader.Load(path);
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var config = KvProfileOptions.Config(r.GetValue(kv)!, prof, r.GetValue(sink)) with { Policy = policies[0] };
            var lm = where.Load(loaded.Weights, r.GetValue(threads));
            using var lmOwner = lm as IDisposable;
            DeviceChoice.Check(lm, config);
            // Warm-up as in bench/Kvq.Bench: enough work for the JIT's optimised tier, weights paged in (on a GPU:
            // kernels compiled or read from the cubin cache); then the better of two runs, so `kvq bench` and the
            // side-by-side tool report comparable figures.
            ThroughputBenchmark.WarmUp(lm, Path.GetFileName(path), r.GetValue(ctx), config);
            var res = ThroughputBenchmark.Best(() =>
                ThroughputBenchmark.Run(lm, Path.GetFileName(path), r.GetValue(ctx), config, r.GetValue(decode)));
            if (r.GetValue(json)) Console.WriteLine(CliJson.Line(res));
            else
                Console.WriteLine($"{res.Model} ctx {res.Ctx} kv {res.Kv} on {lm.Device}: prefill {res.PrefillTokS:F1} tok/s, " +
                                  $"decode {res.DecodeTokS:F1} tok/s, peak host memory {res.PeakMemoryBytes / 1048576.0:F1} MiB, " +
                                  $"KV {res.KvBytes / 1048576.0:F2} MiB of {where.MemoryKind} ({res.Machine})");
            return 0;
        }));
        return cmd;
    }
}
