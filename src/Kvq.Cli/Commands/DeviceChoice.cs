using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Cuda;
using Kvq.Cuda.Distributed;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cli.Commands;

/// <summary>Where a command runs its model (from <see cref="DeviceOptions"/>): the CPU <see cref="Transformer"/> or the
/// <see cref="CudaTransformer"/>. A model from <see cref="Load"/> may be IDisposable (the GPU one is): dispose it.</summary>
public sealed record DeviceChoice(bool Cuda, CudaWeightType Weights)
{
    public static readonly DeviceChoice Cpu = new(false, CudaWeightType.F16);

    /// <summary>--gpus: sequence parallelism over this many GPUs, one process each (0 = off).</summary>
    public int Gpus { get; init; }

    /// <summary>With --gpus, in the launcher (not a rank): start the ranks and return their exit code; null where this
    /// process should run the command itself.</summary>
    public int? LaunchRanks() => Gpus > 0 && RankLauncher.Current() == null ? RankLauncher.Launch(Gpus) : null;

    /// <summary>How KV bytes are described in reports: a GPU sequence's live in device memory.</summary>
    public string MemoryKind => Cuda ? "device memory" : "host memory";

    public ILanguageModel Load(ModelWeights weights, int threads)
    {
        if (!Cuda) return new Transformer(weights, new Parallelism(threads));
        try
        {
            if (Gpus > 0 && RankLauncher.Current() is { } rank)
            {
                if (rank.World != Gpus) throw new CliException($"--gpus {Gpus} in a rank of a world of {rank.World}");
                var model = CudaTransformer.Load(weights, new CudaModelOptions(Weights, DeviceOrdinal: rank.Rank, ContiguousNuq: false));
                try
                {
                    model.Sharding = new SequenceParallel(rank.World, NcclCommunicator.Create(model.Context, rank.Rank, rank.World, rank.Id));
                }
                catch
                {
                    model.Dispose();
                    throw;
                }
                return model;
            }
            return CudaTransformer.Load(weights, new CudaModelOptions(Weights));
        }
        catch (CudaUnavailableException e)
        {
            throw new CliException($"--device cuda: CUDA is not available: {e.Reason}");
        }
    }

    /// <summary>Fails fast when the model cannot hold <paramref name="config"/> (unknown names, values in a key-only
    /// format, a profile of another model shape): the layout plan is built (no cache). A GPU model also makes and drops
    /// one sequence, as only its device cache knows which formats it stores.</summary>
    public static void Check(ILanguageModel model, KvCacheConfig config)
    {
        KvLayoutPlan.Build(model.KvShape, config);
        if (model is Transformer) return;
        try
        {
            var seq = model.CreateSequence(config, config.BlockTokens);
            (seq as IDisposable)?.Dispose();
        }
        catch (NotSupportedException e)
        {
            throw new CliException($"--kv {config.Name}: not supported on {model.Device}: {e.Message}");
        }
    }
}
