using System.CommandLine;

namespace Kvq.Cli.Commands;

/// <summary>--device and --device-weights for commands that run the model (generate, eval, bench). Checked before any
/// model is loaded; mistakes are one typed line (exit 2).</summary>
public sealed class DeviceOptions(bool gpus = false)
{
    private readonly bool _gpus = gpus;   // --gpus offered (commands that start their ranks: generate)

    public Option<string> Device { get; } = new("--device")
    {
        Description = "where the model runs: cpu, or cuda (weights, activations and KV cache in GPU memory)",
        DefaultValueFactory = _ => "cpu",
    };
    public Option<string> Weights { get; } = new("--device-weights")
    {
        Description = "weight matrices on the GPU with --device cuda: f16 or f32 (exact products, to compare with the CPU)",
        DefaultValueFactory = _ => "f16",
    };

    public Option<int> Gpus { get; } = new("--gpus")
    {
        Description = "with --device cuda: sequence parallelism over N GPUs (kvq starts one process per GPU; each holds a " +
                      "contiguous 1/N of every sequence's KV cache, attention states combined over NCCL; docs/multigpu.md); 0 = off",
        DefaultValueFactory = _ => 0,
    };

    public void AddTo(Command cmd)
    {
        cmd.Add(Device);
        cmd.Add(Weights);
        if (_gpus) cmd.Add(Gpus);
    }

    /// <summary>The device asked for; with cuda, token policies are refused (they run on the CPU cache only).</summary>
    public DeviceChoice Parse(ParseResult r, IReadOnlyList<Cache.Policies.KvPolicyConfig?> policies)
    {
        var device = r.GetValue(Device) ?? "cpu";
        bool cuda = device.Trim().ToLowerInvariant() switch
        {
            "cpu" => false,
            "cuda" => true,
            _ => throw new CliException($"--device {device}: expected cpu or cuda"),
        };
        var weights = r.GetValue(Weights) ?? "f16";
        if (weights.Trim().ToLowerInvariant() is not ("f16" or "f32"))
            throw new CliException($"--device-weights {weights}: expected f16 or f32");
        if (cuda && policies.Any(p => p != null))
            throw new CliException("--policy: token policies run on the CPU cache only; not supported with --device cuda yet");
        int gpus = _gpus ? r.GetValue(Gpus) : 0;
        if (gpus < 0) throw new CliException($"--gpus {gpus}: expected a whole number >= 0 (0 = off)");
        if (gpus > 0 && !cuda) throw new CliException($"--gpus {gpus}: sequence parallelism runs on GPUs: add --device cuda");
        return new DeviceChoice(cuda, Cuda.Model.CudaModelOptions.ParseWeights(weights)) { Gpus = gpus };
    }
}
