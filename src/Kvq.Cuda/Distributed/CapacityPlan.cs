using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cuda.Model;
using Kvq.Model;

namespace Kvq.Cuda.Distributed;

/// <summary>One KV format's bytes per token (all layers and KV heads): what the device cache allocates for it (the
/// paged model layout that sequence-parallel shards use: <see cref="CudaKvCache"/>, <see cref="NuqDeviceLayer"/>) and,
/// where the format's layout plan can be built (f16, or KVQuant with its profile), the plan's bytes at full blocks.</summary>
public sealed record KvFormatBytes(string Name, long DeviceBytesPerToken, double? PlanBytesPerToken);

/// <summary>
/// Memory of sequence-parallel decoding on N GPUs (docs/multigpu.md, `kvq inspect --gpus N --ctx T`): per GPU the
/// weights (replicated, f16), the model's activation buffers, the attention partials, the split partials all-gathered
/// per layer and NCCL's own buffers, a reserve for the CUDA context and libraries, and the KV cache of T / N tokens; how many
/// tokens fit. Figures follow the allocations of <see cref="CudaTransformer"/>, <see cref="CudaKvSequence"/> and
/// <see cref="ShardedKvSequence"/>; NCCL's internal buffers and the reserve are assumptions (named as such).
/// </summary>
public sealed class CapacityPlan
{
    /// <summary>NCCL's internal buffers per GPU, assumed: 2 directions x 32 channels x NCCL_BUFFSIZE (4 MiB default).</summary>
    public const long NcclInternalBytes = 2L * 32 * (4L << 20);
    /// <summary>CUDA context, cuBLAS workspace and the compiled modules, assumed 1 GiB per GPU.</summary>
    public const long ReserveBytes = 1L << 30;
    /// <summary>Split-K partial states a sequence keeps room for (CudaKvSequence: 1024 per query head).</summary>
    public const int PartialStates = CudaKvSequence.MaxSplitStates;
    /// <summary>SMs of the GPU the split plans are made for (an H100 SXM's 132): how many splits a shard's partials hold.</summary>
    public const int Multiprocessors = 132;

    public ModelConfig Model { get; }
    public int Gpus { get; }
    public long GpuBytes { get; }
    public int MaxBatch { get; }

    public CapacityPlan(ModelConfig model, int gpus, long gpuBytes, int maxBatch = 64)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(gpus);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(gpuBytes);
        Model = model;
        Gpus = gpus;
        GpuBytes = gpuBytes;
        MaxBatch = Math.Max(1, maxBatch);
    }

    /// <summary>f16 weights on each GPU (replicated): embedding, LM head (unless tied), per layer Q, K, V, O, gate, up,
    /// down and two norms (f32), the output norm.</summary>
    public long WeightBytes
    {
        get
        {
            var c = Model;
            long perLayer = 2L * ((long)c.Dim * c.QDim + 2L * c.Dim * c.KvDim + (long)c.QDim * c.Dim + 3L * c.Dim * c.FfnDim) + 2 * 4L * c.Dim;
            long embed = 2L * c.VocabSize * c.Dim;
            return embed * 2 + c.Layers * perLayer + 4L * c.Dim;
        }
    }

    /// <summary>The model's activation buffers for a chunk of <see cref="MaxBatch"/> rows (CudaTransformer: f32 rows of
    /// x, xn, q, k, v, att, proj, gate, up, logits and ids/positions; f16 copies of x, att, gate).</summary>
    public long ActivationBytes
    {
        get
        {
            var c = Model;
            long b = MaxBatch;
            long f32 = b * (3L * c.Dim + 2L * c.QDim + 2L * c.KvDim + 2L * c.FfnDim + c.VocabSize) + b * 4;
            long f16 = b * ((long)c.Dim + c.QDim + c.FfnDim);
            return 4 * f32 + 2 * f16;
        }
    }

    /// <summary>Split-K partials of the shard's own sequence (CudaKvSequence), 1024 states per query head.</summary>
    public long PartialBytes => (long)PartialStates * Model.Heads * (Model.HeadDim + 2) * 4;

    /// <summary>The split partials gathered per layer (ShardedKvSequence): [GPU][rows x split slots][query head][head
    /// dim + 2] f32, rows x slots up to <see cref="ShardSplitPlan.SlotsPerPart"/> (rows up to <see cref="MaxBatch"/>).</summary>
    public long StateBytes => (long)Gpus * ShardSplitPlan.SlotsPerPart(MaxBatch, Model.KvHeads, Multiprocessors, PartialStates)
                              * Model.Heads * (Model.HeadDim + 2) * 4;

    /// <summary>Bytes per GPU besides the KV cache.</summary>
    public long FixedBytes => WeightBytes + ActivationBytes + PartialBytes + StateBytes + NcclInternalBytes + ReserveBytes;

    /// <summary>KV bytes on each GPU for a sequence of <paramref name="tokens"/> tokens cut evenly into whole blocks.</summary>
    public long KvBytesPerGpu(KvFormatBytes f, long tokens) =>
        ShardLayout.Even(tokens, Gpus).Capacity[0] * f.DeviceBytesPerToken;

    /// <summary>The most tokens that fit on <see cref="Gpus"/> GPUs: whole 128-token blocks per GPU in what the fixed
    /// parts leave (0 when they leave nothing).</summary>
    public long TokensThatFit(KvFormatBytes f)
    {
        long free = GpuBytes - FixedBytes;
        if (free <= 0) return 0;
        long blocks = free / (f.DeviceBytesPerToken * ShardLayout.BlockTokens);
        return Gpus * blocks * ShardLayout.BlockTokens;
    }

    /// <summary>Bytes per token of a KV format on the device (and in the layout plan where it builds). f16, or KVQuant
    /// nuqB / nuqB-F% (pre-RoPE per-channel keys, per-token values, any outlier rate); :mixed needs its profile's widths,
    /// so only the plan counts it.</summary>
    public static KvFormatBytes FormatBytes(ModelConfig model, KvCacheConfig config)
    {
        var shape = model.CreateKvShape();
        double? plan = null;
        try
        {
            var p = KvLayoutPlan.Build(shape, config);
            plan = (double)p.BytesPerBlock / p.BlockTokens;
        }
        catch (KvSpecException) { /* KVQuant without a profile: no plan, the device bytes below */ }
        long device;
        if (config.KeyFormat == "f16" && config.ValueFormat == "f16") device = 2L * 2 * shape.Layers * shape.KvDim;
        else
        {
            var k = KvQuantSpec.TryParse(config.KeyFormat);
            var v = KvQuantSpec.TryParse(config.ValueFormat);
            if (k == null || v == null || k.Mixed || v.Mixed)
                throw new KvSpecException($"KV format '{config.Name}': the device cache stores f16 or KVQuant nuqB[-F%] (no :mixed without its profile)");
            var key = new NuqChannelCodec(k, KvSide.Key, 32, shape.HeadDim, new float[shape.HeadDim], Enumerable.Repeat(1f, shape.HeadDim).ToArray(), NuqCodebook.Uniform(k.Bits));
            var value = new NuqTokenCodec(v, KvSide.Value, 32, shape.HeadDim, NuqCodebook.Uniform(v.Bits));
            device = shape.Layers * NuqDeviceLayer.AllocatedBytesPerToken(shape.KvHeads, shape.HeadDim, k.Bits, v.Bits, key.OutlierSlots, 2 * value.OutliersPerTail);
        }
        return new KvFormatBytes(config.Name, device, plan);
    }
}

/// <summary>
/// Time of one decode step of sequence-parallel decoding, modelled (docs/multigpu.md): the replicated weight products,
/// attention over each GPU's T / N tokens at a measured one-GPU rate, and per layer the combine: an all-gather of every
/// GPU's split partials (latency + bytes at NCCL's bus bandwidth) and the merge kernel. Rates are inputs: the
/// defaults are the H100 numbers of docs/perf.md and NCCL's published all-gather figures for 8 x H100 (NVLink).
/// </summary>
public sealed record DecodeTimeModel(double WeightsMs, double AttentionNsPerToken, double NcclBusGBps, double NcclLatencyUs, double CombineKernelsUs)
{
    /// <summary>Measured on one H100, LLaMA-7B shape (docs/perf.md): f16 weight products + the rest of a step, 4.81 ms
    /// (run 15: 1M tokens dense nuq2 at 13.23 tok/s with 70.78 ms of attention).</summary>
    public const double H100WeightsMs7B = 4.81;

    /// <summary>Attention ns per cached token per decode step over 32 layers (LLaMA-7B shape, one H100, docs/perf.md):
    /// dense nuq2 70.8 (run 15: 70.78 ms at 1,000,000 tokens); nuq2-1% 113.8, nuq4-1% 120.0, f16 174.0 (runs 15-16: one
    /// layer at 131,072 tokens: 466.0, 491.4, 712.6 us, x 32 layers).</summary>
    public static double H100AttentionNs7B(string format) => format switch
    {
        "nuq2" => 70.78e6 / 1_000_000,
        "nuq2-1%" => 466.0e3 * 32 / 131072,
        "nuq4-1%" => 491.4e3 * 32 / 131072,
        "f16" => 712.6e3 * 32 / 131072,
        _ => double.NaN,
    };

    /// <summary>Assumed from NCCL's published nccl-tests all_gather on 8 x H100 SXM (NVLink 4): ~360 GB/s bus bandwidth
    /// at large sizes, ~15 us per call at the few-hundred-KB sizes of a layer's states.</summary>
    public const double NcclBusGBpsH100x8 = 360, NcclLatencyUsH100x8 = 15;

    /// <summary>The partials' clearing memset + shard_merge per layer (two small launches), assumed 6 us.</summary>
    public const double CombineKernelsUsDefault = 6;

    public static DecodeTimeModel H100(string format) =>
        new(H100WeightsMs7B, H100AttentionNs7B(format), NcclBusGBpsH100x8, NcclLatencyUsH100x8, CombineKernelsUsDefault);

    /// <summary>(local attention, combine, total) ms of one decode step of <paramref name="tokens"/> cached tokens over
    /// <paramref name="gpus"/> GPUs for <paramref name="model"/> (one query row).</summary>
    public (double AttentionMs, double CombineMs, double TotalMs) Step(ModelConfig model, long tokens, int gpus)
    {
        double local = (double)ShardLayout.Even(tokens, gpus).Capacity[0] * AttentionNsPerToken / 1e6;
        // One row's split partials from every GPU: as many splits as the local plan over T / N tokens takes.
        int splits = AttentionSplit.For(ShardLayout.Even(tokens, gpus).Capacity[0], 1, model.KvHeads, CapacityPlan.Multiprocessors, CapacityPlan.PartialStates).Splits;
        double bytes = (double)gpus * model.Heads * splits * (model.HeadDim + 2) * 4;
        double perLayerUs = gpus > 1 ? NcclLatencyUs + bytes * (gpus - 1) / gpus / (NcclBusGBps * 1e3) + CombineKernelsUs : CombineKernelsUs;
        double combine = model.Layers * perLayerUs / 1e3;
        return (local, combine, WeightsMs + local + combine);
    }
}
