using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// Which cache configs the device's host tier (<see cref="OffloadedKvSequence"/>) takes, and their codecs: a KVQuant
/// format of the paged device layout (nuqB[-F%], :mixed, with at most 8 sink tokens) with an offload budget. Everything
/// else is refused with a <see cref="KvSpecException"/> naming what and why: f16 and other formats (the tier moves
/// KVQuant blocks only), token policies, the file tier (--offload-dir is the CPU cache's), sliding-window rings, and
/// summary boxes other than the whole 128-token block (the device keeps one box per block).
/// </summary>
public static class OffloadFormat
{
    /// <summary>The most sink tokens the device's decode kernels take.</summary>
    public const int MaxSinkTokens = 8;

    /// <summary>Per layer, the KVQuant codecs (one per KV head) of <paramref name="config"/> on a model of
    /// <paramref name="shape"/>.</summary>
    /// <exception cref="KvSpecException">What the device's host tier does not take.</exception>
    public static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[] Codecs(KvCacheConfig config, KvShape shape)
    {
        var budget = config.Offload ?? throw new KvSpecException($"KV cache {config.Name}: no offload budget (--offload-budget)");
        string where = $"--offload-budget {budget.Name["offload@".Length..]} with --kv {config.FormatName} on the CUDA device";
        if (config.Policy != null)
            throw new KvSpecException($"{where}: a token policy ({config.Policy.Name}) and offloading do not combine");
        if (config.BlockDirectory != null)
            throw new KvSpecException($"{where}: the file tier (--offload-dir) is the CPU cache's; the device's blocks move to pinned host memory");
        if (config.SlidingRing)
            throw new KvSpecException($"{where}: sliding-window rings do not combine with offloading");
        if (config.SinkTokens > MaxSinkTokens)
            throw new KvSpecException($"{where}: --sink {config.SinkTokens}: at most {MaxSinkTokens} sink tokens (the decode kernels' limit)");
        if (budget.BoxTokens is not (8 or 0 or CudaKvCache.BlockTokens))
            throw new KvSpecException($"{where}: box={budget.BoxTokens}: the device keeps one summary box per {CudaKvCache.BlockTokens}-token block");
        var plain = config with { Offload = null };
        (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? codecs;
        try
        {
            codecs = CudaKvSequence.Check(KvLayoutPlan.Build(shape, plain));
        }
        catch (Exception e) when (e is KvSpecException or NotSupportedException)   // a format or a model shape the device lacks
        {
            throw new KvSpecException($"{where}: {e.Message}");
        }
        return codecs ?? throw new KvSpecException($"{where}: the host tier moves KVQuant blocks (nuqB[-F%], optionally :mixed); " +
                                                   "f16 is not offloaded on the device (use a nuq format, or --device cpu)");
    }
}
