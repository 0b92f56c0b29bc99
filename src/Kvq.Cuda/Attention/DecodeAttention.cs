namespace Kvq.Cuda.Attention;

/// <summary>
/// Runs decode attention for one query token per head over a <see cref="GpuLayerCache"/>: the split kernel (one
/// block per KV head and split, all the head's query heads at once) then the reduce kernel (splits and sink merged).
/// Owns the partial-result buffers for the largest plan it has seen.
/// </summary>
public sealed class DecodeAttention : IDisposable
{
    private readonly DecodeKernels _kernels;
    private readonly KernelArgs _args = new(), _rargs = new();
    private DeviceBuffer? _acc, _ml;
    private readonly HashSet<string> _sharedSet = new();
    public double Log2Base { get; }

    /// <summary>v4's two shared-memory stages (v5 keeps one) (decode_stage.cuh, Stage&lt;B, KS, VS&gt;): per 256-token
    /// chunk the key and value codes, key slots (f16 + u8), value zero/range words and value slots. The dense layout
    /// has no slots (<paramref name="keySlots"/> = <paramref name="valueSlots"/> = 0); the sparse one adds its key
    /// outlier record (<paramref name="keyListWords"/> u32).</summary>
    public static int StageBytes(int bits, int keySlots = DecodeShape.KeySlots, int valueSlots = DecodeShape.ValueSlots, int keyListWords = 0)
    {
        int codes = DecodeShape.Chunk * 128 * bits / 8;
        int rest = DecodeShape.Chunk * (keySlots * 3 + 4 + valueSlots * 3) + keyListWords * 4;
        return 2 * (2 * codes + rest);
    }
    /// <summary>Dynamic shared memory of a nuq kernel version: v4 two stages, v5/v6 one, v7-v10 one stage and their
    /// lookup tables (attn_v7.cuh, Tabs7: a float2 value pair table in 8-32 copies, per-lane key pair tables;
    /// which ones per version and width: kpair7, vrep7).</summary>
    public static int SharedBytes(int version, int bits, int keySlots, int valueSlots, int keyListWords, int group = 1)
    {
        int stage = StageBytes(bits, keySlots, valueSlots, keyListWords);
        if (version < 5) return stage;
        if (version < 7) return stage / 2;
        // attn_v7.cuh kpair7 / vrep7: per version, key pair tables or not, and the value table's copies.
        bool keyPairs = version >= 9 ? bits == 2 : bits < 4;
        int copies = version == 10 ? 8 : version >= 9 ? (bits == 4 ? 0 : 32) : (bits == 4 ? 16 : 32);   // v11: v9's tables
        int entries = 1 << (2 * bits);
        int values = entries * copies * 8, keys = keyPairs ? 2 * entries * 32 * 8 : 0;
        // v11+: a GQA block's 8 warps each keep one 8-token tile of rotated f16 keys (attn_v7.cuh, K16); v13 and v14 16
        // tokens, where the values pass writes its 16 f16 value rows for one tensor-core step (v15 makes them in registers).
        int tileTokens = version is 13 or 14 ? 2 * DecodeShape.Tile : DecodeShape.Tile;
        int keyTiles = version >= 11 && group > 1 ? 8 * tileTokens * 128 * 2 : 0;
        // v17: the rotated query's rows padded by 16 bytes against bank conflicts (attn_v7.cuh KQ_QB17: 8 x 34 x 8 B a warp).
        if (version is 17 or 18 && group > 1) keyTiles = 8 * 8 * 34 * 8;
        // v16: the tiles' bytes hold each warp's rotated query instead, and the per-block key table follows (attn_v7.cuh
        // KQ_ENTRIES: 2 halves x 8 slices x 3 parts x 32 lanes x 16 B: RoPE offset x range and the rotated zero per pair).
        // v18: one half of that table, shared by both halves of a warp's tokens (KQ_ENTRIES18: 8 x 3 x 32 x 16 B).
        int keyTable = version is 16 or 17 && group > 1 ? 2 * 8 * 3 * 32 * 16 : version == 18 && group > 1 ? 8 * 3 * 32 * 16 : 0;
        return stage / 2 + values + keys + keyTiles + keyTable;
    }
    /// <summary>Blocks per SM the split-K plan aims at (kv heads x splits), more than fit at once: the waves even out.</summary>
    public const int DefaultBlocksPerSm = 8;
    public int BlocksPerSm { get; set; } = DefaultBlocksPerSm;
    /// <summary>Where the split kernel comes from: production's <see cref="DecodeKernels"/> (the default), or in the
    /// kernel lab another nuq version (its reduce stays production's: every version writes the same partials).</summary>
    public ISplitKernels Split { get; set; }

    public DecodeAttention(DecodeKernels kernels, double ropeBase = 10000.0)
    {
        _kernels = kernels;
        Split = kernels;
        Log2Base = Math.Log2(ropeBase);
    }

    public SplitPlan Plan(GpuLayerCache cache) =>
        SplitPlan.For(cache.Tokens, cache.Shape.KvHeads, _kernels.Context.Device.Multiprocessors, BlocksPerSm, pairShortSplits: cache.KeyBits != 16);

    /// <summary>out[qh][d] = softmax(q . R k / sqrt(d)) v; q is [query heads][head dim] float32, already rotated.</summary>
    public void Run(GpuLayerCache cache, DeviceBuffer q, DeviceBuffer output, CudaStream? stream = null) =>
        Run(cache, q.Pointer, output.Pointer, stream);

    /// <summary>The same from raw device addresses (a model's query and output rows).</summary>
    public void Run(GpuLayerCache cache, ulong q, ulong output, CudaStream? stream = null)
    {
        var s = cache.Shape;
        var plan = Plan(cache);
        long accBytes = (long)s.QueryHeads * plan.Splits * s.HeadDim * 4, mlBytes = (long)s.QueryHeads * plan.Splits * 8;
        DeviceBuffer.AtLeast(ref _acc, _kernels.Context, accBytes);
        DeviceBuffer.AtLeast(ref _ml, _kernels.Context, mlBytes);
        var args = new AttnArgs
        {
            N = (int)cache.Tokens, Sink = cache.Sink, ChunksPerSplit = plan.ChunksPerSplit, Splits = plan.Splits,
            Scale = 1f / MathF.Sqrt(s.HeadDim), Log2Base = Log2Base,
        };
        _args.Clear().Add(args);
        cache.AddAttentionArgs(_args, q);
        _args.Add(_acc).Add(_ml).Add(cache.Padded);
        var nuq = cache as NuqLayerCache;
        var kernel = Split.Attention(cache.KeyBits, cache.KeyBits, s.Group, nuq?.Layout ?? NuqLayout.Slots);
        int version = Split.Version;
        bool staged = cache.KeyBits != 16 && version >= 4;
        int shared = staged ? SharedBytes(version, cache.KeyBits, nuq!.KeySlots, nuq.ValueSlots, nuq.KeyListWords, s.Group) : 0;
        if (staged && _sharedSet.Add(kernel.Name)) kernel.SetMaxDynamicShared(shared);
        kernel.Launch(new LaunchShape((uint)plan.Splits, (uint)s.KvHeads, 1, staged ? 256u : 128u, (uint)shared), _args, stream);
        var (sk, sv) = cache.SinkBuffers;
        _rargs.Clear().Add(args).Add(s.Group).Add(q).Add(_acc).Add(_ml).Add(sk).Add(sv).Add(output);
        _kernels.Reduce().Launch(new LaunchShape((uint)s.QueryHeads, 1, 1, (uint)s.HeadDim), _rargs, stream);
    }

    public void Dispose()
    {
        _args.Dispose();
        _rargs.Dispose();
        _acc?.Dispose();
        _ml?.Dispose();
    }
}
