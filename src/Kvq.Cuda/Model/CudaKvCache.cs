using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cuda.Attention;
using Kvq.Tensors;

namespace Kvq.Cuda.Model;

/// <summary>
/// Paged KV storage in device memory for one model and one KV format: per layer, a pool of blocks of
/// <see cref="BlockTokens"/> tokens (f16, or the model's KVQuant layout <see cref="NuqDeviceLayer"/>), shared by the
/// sequences made from it. A sequence takes blocks as it grows and gives them back when disposed; its block table
/// maps its tokens to physical slots (model.cu phys). The contiguous KVQuant decode layout (<see cref="ContiguousLayout"/>)
/// is not paged: there every sequence holds its own contiguous cache and the pool is empty.
/// </summary>
public sealed class CudaKvCache : IDisposable
{
    /// <summary>Tokens per block: a multiple of every attention tile (model.cu PB).</summary>
    public const int BlockTokens = 128;

    private readonly Stack<int> _free = new();
    internal CudaContext Context { get; }
    internal ModelKernels Kernels { get; }
    internal KvShape Shape { get; }
    internal RopeParams Rope { get; }
    internal (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? Codecs { get; }
    internal NuqLayout? ContiguousLayout { get; }
    internal Func<DecodeKernels>? ContiguousKernels { get; }
    internal DeviceBuffer[] K { get; }
    internal DeviceBuffer[] V { get; }
    internal NuqDeviceLayer[]? Nuq { get; }
    /// <summary>(cos, sin) per RoPE pair: rows for positions 0..127 and one per 128 positions (model.cu rope_table).</summary>
    internal DeviceBuffer? Table { get; }
    public KvCacheConfig Config { get; }
    /// <summary>The layout plan the cache was built from (the CPU cache's: per layer and side the codecs whose
    /// parameters the device arrays mirror); null for codecs given by hand (<see cref="CudaTransformer.CreateKvQuantSequence"/>).</summary>
    public KvLayoutPlan? Plan { get; }
    /// <summary>Physical blocks in the pool (0 for the contiguous layout).</summary>
    public int Blocks { get; }
    /// <summary>The longest sequence this cache serves (positions covered by the angle table).</summary>
    public long MaxTokens { get; }
    public int FreeBlocks => _free.Count;
    public bool Paged => ContiguousLayout == null;
    /// <summary>The sequence position of slot 0 (a multiple of <see cref="BlockTokens"/>): 0, or for one shard of a
    /// sequence-parallel cache (Distributed/ShardedKvSequence) the first position of its range. f16 keys are rotated at
    /// slot + this; KVQuant keys by an angle table whose coarse rows start at this position.</summary>
    public long FirstPosition { get; }

    /// <summary>A cache for a layout plan: f16 or the plan's KVQuant codecs (<see cref="CudaKvSequence.Check(KvLayoutPlan)"/>
    /// refuses what the device does not store).</summary>
    internal CudaKvCache(CudaContext ctx, ModelKernels kernels, KvLayoutPlan plan, long poolTokens, Func<DecodeKernels>? contiguousKernels)
        : this(ctx, kernels, plan.Shape, plan.Config, poolTokens, CudaKvSequence.Check(plan), contiguousKernels) => Plan = plan;

    internal CudaKvCache(CudaContext ctx, ModelKernels kernels, KvShape shape, KvCacheConfig config, long poolTokens,
        (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? codecs, Func<DecodeKernels>? contiguousKernels, long firstPosition = 0)
    {
        if (poolTokens <= 0) throw new ArgumentOutOfRangeException(nameof(poolTokens), poolTokens, "a device KV cache needs room for at least one token");
        if (firstPosition < 0 || firstPosition % BlockTokens != 0)
            throw new ArgumentOutOfRangeException(nameof(firstPosition), firstPosition, $"a cache's first position is a multiple of {BlockTokens}");
        if (firstPosition > 0 && contiguousKernels != null)
            throw new ArgumentException("the contiguous decode layout starts at position 0 (a shard of a sequence-parallel cache takes the model's layout)", nameof(contiguousKernels));
        FirstPosition = firstPosition;
        Context = ctx;
        Kernels = kernels;
        Shape = shape;
        Config = config;
        Codecs = codecs;
        Rope = new RopeParams(shape.HeadDim, shape.Rope.RopeDims, shape.Rope.Style == RopeStyle.Neox, shape.Rope.Scale,
            MathF.Pow(shape.Rope.Base, -2.0f / shape.Rope.RopeDims));
        ContiguousLayout = codecs != null && contiguousKernels != null ? CudaKvSequence.ContiguousLayout(codecs, shape, config.SinkTokens) : null;
        ContiguousKernels = ContiguousLayout != null ? contiguousKernels : null;
        int blocks = (int)((poolTokens + BlockTokens - 1) / BlockTokens);
        MaxTokens = (long)blocks * BlockTokens;
        K = new DeviceBuffer[shape.Layers];
        V = new DeviceBuffer[shape.Layers];
        try
        {
            if (codecs != null)
            {
                long rows = 128 + MaxTokens / 128, rowBytes = shape.Rope.RopeDims / 2 * 8L;
                Table = ctx.Allocate(rows * rowBytes);
                if (firstPosition == 0) kernels.RopeTable(rows, Rope, Table);
                else
                {
                    // The fine rows (positions 0..127) as always; the coarse rows of positions firstPosition + 128 k,
                    // taken from a table that reaches this cache's last position: the kernels rotate slot 128 k + r by
                    // coarse[k] x fine[r], which is then position firstPosition + 128 k + r, with the unsharded numbers.
                    long full = 128 + (firstPosition + MaxTokens) / 128;
                    using var whole = ctx.Allocate(full * rowBytes);
                    kernels.RopeTable(full, Rope, whole);
                    Table.CopyFromDevice(whole, 0, 0, 128 * rowBytes);
                    Table.CopyFromDevice(whole, (128 + firstPosition / 128) * rowBytes, 128 * rowBytes, (rows - 128) * rowBytes);
                    ctx.Synchronize();   // before the temporary table is freed
                }
            }
            if (ContiguousLayout == null)
            {
                Blocks = blocks;
                if (codecs != null)
                {
                    Nuq = new NuqDeviceLayer[shape.Layers];
                    for (int l = 0; l < shape.Layers; l++) Nuq[l] = new NuqDeviceLayer(ctx, codecs[l].Keys, codecs[l].Values, MaxTokens);
                }
                else
                {
                    long bytes = shape.KvHeads * MaxTokens * shape.HeadDim * 2;
                    for (int l = 0; l < shape.Layers; l++)
                    {
                        K[l] = ctx.Allocate(bytes);
                        V[l] = ctx.Allocate(bytes);
                    }
                }
                for (int b = Blocks - 1; b >= 0; b--) _free.Push(b);
            }
        }
        catch
        {
            Dispose();   // a cache that could not be built gives back what it had taken
            throw;
        }
    }

    /// <summary>A new, empty sequence of at most <paramref name="maxTokens"/> tokens (at most <see cref="MaxTokens"/>).</summary>
    public CudaKvSequence CreateSequence(int maxTokens) => new(this, maxTokens, ownsCache: false);

    /// <summary>A sequence that owns this cache (disposes it with itself); a sequence that cannot be made disposes it at once.</summary>
    internal CudaKvSequence CreateOwnedSequence(int maxTokens)
    {
        try
        {
            return new(this, maxTokens, ownsCache: true);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private PrefillScratch? _scratch;

    /// <summary>The f16 rows KVQuant prefill chunks decode into (<see cref="NuqPrefill.F16Chunk"/>, <see cref="NuqPrefill.Decoded"/>),
    /// shared by this cache's sequences and layers, made at first use with room for <paramref name="tokens"/>; null when
    /// the device has no memory left for them (<see cref="PrefillScratch.TryEnsure"/>).</summary>
    internal PrefillScratch? PrefillScratch(long tokens)
    {
        _scratch ??= new PrefillScratch(Context, Shape.KvHeads, Shape.HeadDim, MaxTokens);
        return _scratch.TryEnsure(tokens) ? _scratch : null;
    }

    internal int Rent() => _free.Count > 0 ? _free.Pop()
        : throw new InvalidOperationException($"CUDA KV cache full: all {Blocks} blocks of {BlockTokens} tokens are held by sequences");

    internal void Return(int block) => _free.Push(block);

    /// <summary>Device bytes of the pool (every block, held or free), the angle table and the prefill scratch (once made).</summary>
    public long DeviceBytes => K.Sum(b => b?.Bytes ?? 0) + V.Sum(b => b?.Bytes ?? 0) + (Nuq?.Sum(l => l?.DeviceBytes ?? 0) ?? 0) + (Table?.Bytes ?? 0)
        + (_scratch?.DeviceBytes ?? 0);

    /// <summary>Stored bytes per token over all layers (codes, slots, scales), for memory reports.</summary>
    internal long BytesPerToken => Nuq != null ? Nuq.Sum(l => l.BytesPerToken) : 2L * 2 * Shape.Layers * Shape.KvDim;

    public void Dispose()
    {
        foreach (var b in K) b?.Dispose();
        foreach (var b in V) b?.Dispose();
        if (Nuq != null) foreach (var l in Nuq) l?.Dispose();
        Table?.Dispose();
        _scratch?.Dispose();
    }
}
