using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Cuda.Offload;
using Kvq.Model;

namespace Kvq.Cli.Commands;

/// <summary>--offload-budget with --device cuda: the device's host tier (docs/offload.md, "GPU tiers"). A KVQuant cache
/// whose prompt is prefilled on the device and whose older blocks then move to pinned host memory after each decode
/// step, attention reading the blocks the budget chooses. What the tier does not take is one line, exit code 2.</summary>
public static class GpuOffload
{
    /// <summary>Refuses, before the model loads, the options the device's host tier does not combine with.</summary>
    public static void CheckOptions(DeviceChoice where, bool offload, string? offloadDir)
    {
        if (!where.Cuda || !offload) return;
        if (where.Gpus > 0)
            throw new CliException($"--offload-budget with --gpus {where.Gpus}: offloading on the CUDA device runs on one GPU (no sequence parallelism)");
        if (offloadDir != null)
            throw new CliException("--offload-dir: the file tier is the CPU cache's; with --device cuda the blocks move to pinned host memory " +
                                   "(drop --offload-dir, or use --device cpu)");
    }

    /// <summary>Checks <paramref name="config"/> against the model's shape before the model goes to the device: f16, other
    /// formats, too many sink tokens or summary boxes other than the block are a <see cref="KvSpecException"/>.</summary>
    public static void CheckFormat(DeviceChoice where, KvCacheConfig config, ModelConfig model)
    {
        if (where.Cuda && config.Offload != null) OffloadFormat.Codecs(config, model.CreateKvShape());
    }

    /// <summary>The sequence a generation starts in: on the device's host tier, sized for a prompt of
    /// <paramref name="promptTokens"/> tokens in a window of <paramref name="window"/>; null when not offloading on a GPU.</summary>
    public static IKvSequence? First(ILanguageModel lm, KvCacheConfig config, int window, int promptTokens)
    {
        if (lm is not CudaTransformer cuda || config.Offload == null) return null;
        try
        {
            return cuda.CreateOffloadedKvSequence(config, window, promptTokens);
        }
        catch (HostMemoryException e)
        {
            throw new CliException($"--offload-budget: {e.Message}; give a smaller --ctx");
        }
    }

    /// <summary>The host tier's line (blocks per tier, hit rate, hidden transfers, bytes), or null for another sequence.</summary>
    public static string? Report(IKvSequence seq) => seq is OffloadedKvSequence off ? OffloadReport.Describe(off) : null;
}
