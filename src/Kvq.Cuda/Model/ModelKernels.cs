using Kvq.Tensors;

namespace Kvq.Cuda.Model;

/// <summary>
/// The forward-pass kernels of model.cu for one context (compiled by NVRTC for the device, cached on disk), with
/// typed launchers. Launches go to the legacy default stream, in order with cuBLAS and the copies, except while
/// <see cref="Stream"/> names another (a CUDA graph being captured: Model/DecodeGraph).
/// </summary>
internal sealed class ModelKernels : IDisposable
{
    private readonly CudaModule _module;
    private readonly Dictionary<string, CudaKernel> _kernels = new();
    private readonly KernelArgs _a = new();
    private const int Threads = 256;

    public ModelKernels(KernelLoader loader) => _module = loader.Load(KernelSources.Read("model.cu"), "model.cu");

    /// <summary>The stream launches go to (null: the legacy default stream); an explicit stream argument wins.</summary>
    public CudaStream? Stream { get; set; }

    private CudaKernel K(string name)
    {
        if (!_kernels.TryGetValue(name, out var k)) _kernels[name] = k = _module.Kernel(name);
        return k;
    }

    /// <summary>Loads the kernels a captured decode step launches and the direct step does not (rope_rows_at), so that no
    /// kernel is first loaded inside a capture (drivers before CUDA 12.3 refuse that).</summary>
    public void PrepareDecodeGraph() => K("rope_rows_at");

    private static LaunchShape Elementwise(long n) => LaunchShape.Grid1((n + Threads - 1) / Threads, Threads);

    public void Embed(DeviceBuffer table, bool f16, DeviceBuffer ids, int n, int dim, ulong x) => Embed(table, f16, ids.Pointer, n, dim, x);

    public void Embed(DeviceBuffer table, bool f16, ulong ids, int n, int dim, ulong x) =>
        K("embed_rows").Launch(LaunchShape.Grid1(n, 128), _a.Clear().Add(table).Add(f16 ? 1 : 0).Add(ids).Add(dim).Add(x), Stream);

    /// <summary>RMSNorm of <paramref name="rows"/> rows to f32 <paramref name="y"/> and/or f16 <paramref name="yh"/> (0 = skip).</summary>
    public void RmsNorm(ulong x, DeviceBuffer w, int rows, int dim, float eps, ulong y, ulong yh) =>
        K("rmsnorm_rows").Launch(LaunchShape.Grid1(rows, 256), _a.Clear().Add(x).Add(w).Add(dim).Add(eps).Add(y).Add(yh), Stream);

    /// <summary>RMSNorm of rows <paramref name="rows"/>[i] (device int array) of x to rows i of y / yh (0 = skip).</summary>
    public void RmsNormGather(ulong x, ulong rows, int count, DeviceBuffer w, int dim, float eps, ulong y, ulong yh) =>
        K("rmsnorm_gather").Launch(LaunchShape.Grid1(count, 256), _a.Clear().Add(x).Add(rows).Add(w).Add(dim).Add(eps).Add(y).Add(yh), Stream);

    public void SinkWrite(ulong k, ulong v, int kvHeads, int headDim, long pos, int sink, ulong sinkK, ulong sinkV) =>
        K("sink_write").Launch(LaunchShape.Grid1(kvHeads, Pad32(headDim)), _a.Clear().Add(k).Add(v).Add(headDim).Add(pos).Add(sink).Add(sinkK).Add(sinkV), Stream);

    public void SinkOnly(ulong sinkV, int queryHeads, int group, int headDim, int sink, ulong output) =>
        K("sink_only").Launch(LaunchShape.Grid1(queryHeads, Pad32(headDim)), _a.Clear().Add(sinkV).Add(group).Add(headDim).Add(sink).Add(output), Stream);

    /// <summary>n uniform values in [-scale, scale) from a counter hash (f16 or f32).</summary>
    public void FillRandom(ulong p, long n, bool f16, uint seed, float scale) =>
        K("fill_random").Launch(Elementwise(n), _a.Clear().Add(p).Add(n).Add(f16 ? 1 : 0).Add(seed).Add(scale), Stream);

    public void ToF16(ulong x, ulong y, long n) => K("to_f16").Launch(Elementwise(n), _a.Clear().Add(x).Add(y).Add(n), Stream);
    public void Add(ulong x, ulong y, long n) => K("add_inplace").Launch(Elementwise(n), _a.Clear().Add(x).Add(y).Add(n), Stream);
    public void AddBias(ulong x, DeviceBuffer b, int width, long n) =>
        K("add_bias_rows").Launch(Elementwise(n), _a.Clear().Add(x).Add(b).Add(width).Add(n), Stream);
    public void SwiGlu(ulong gate, ulong up, long n) => K("swiglu").Launch(Elementwise(n), _a.Clear().Add(gate).Add(up).Add(n), Stream);

    /// <summary>f16 <paramref name="gh"/> = silu(gate) * up: <see cref="SwiGlu"/> and <see cref="ToF16"/> in one launch.</summary>
    public void SwiGluF16(ulong gate, ulong up, ulong gh, long n) =>
        K("swiglu_f16").Launch(Elementwise(n), _a.Clear().Add(gate).Add(up).Add(gh).Add(n), Stream);

    /// <summary>y = W x for one row with f16 weights (model.cu gemv_f16), the input made in the same launch as
    /// <paramref name="input"/> says: an f16 row at <paramref name="x"/>; or <see cref="RmsNorm"/> of the f32 row at
    /// <paramref name="x"/> with <paramref name="norm"/> (rounded to f16 as the norm's f16 output); or SwiGLU of gate
    /// <paramref name="x"/> and up <paramref name="x2"/> (as <see cref="SwiGluF16"/>). With <paramref name="residual"/>
    /// y += W x (the residual stream). f32 sums in another order than cuBLAS's: equal to rounding.</summary>
    public void Gemv(DeviceMatrix w, GemvInput input, ulong x, ulong x2, DeviceBuffer? norm, float eps, ulong y, bool residual, int multiprocessors)
    {
        if (w.Type != CudaWeightType.F16 || !GemvFits(w.Cols))
            throw new ArgumentException($"gemv_f16 takes f16 weights with a multiple of 8 columns up to {GemvMaxCols}, not {w.Type} x {w.Cols}", nameof(w));
        if (input == GemvInput.Norm && norm == null) throw new ArgumentNullException(nameof(norm));
        int rpw = Math.Clamp(w.Rows / (8 * 4 * Math.Max(1, multiprocessors)), 1, 8);
        long warps = (w.Rows + rpw - 1) / rpw;
        K("gemv_f16").Launch(new LaunchShape((uint)((warps + 7) / 8), 1, 1, 256, (uint)(w.Cols * 2)),
            _a.Clear().Add(w.Buffer.Pointer + (ulong)w.Offset).Add(w.Rows).Add(w.Cols).Add(rpw).Add((int)input).Add(x).Add(x2).Add(norm?.Pointer ?? 0)
              .Add(eps).Add(y).Add(residual ? 1 : 0), Stream);
    }

    /// <summary>Most columns <see cref="Gemv"/> stages: 48 KiB of shared memory without opting in to more, less the
    /// 128 bytes of block_sum's static array (the RMSNorm input mode), in f16, a multiple of 8.</summary>
    public const int GemvMaxCols = (48 * 1024 - 128) / 2 / 8 * 8;

    /// <summary>Whether <see cref="Gemv"/> takes a matrix of <paramref name="cols"/> columns.</summary>
    public static bool GemvFits(int cols) => cols > 0 && cols % 8 == 0 && cols <= GemvMaxCols;

    /// <summary>x += r over <paramref name="rows"/> rows, then <see cref="RmsNorm"/> of them: the residual add and the next
    /// norm in one launch, the same values.</summary>
    public void AddRmsNorm(ulong x, ulong r, DeviceBuffer w, int rows, int dim, float eps, ulong y, ulong yh) =>
        K("add_rmsnorm_rows").Launch(LaunchShape.Grid1(rows, 256), _a.Clear().Add(x).Add(r).Add(w).Add(dim).Add(eps).Add(y).Add(yh), Stream);

    public void Rope(ulong x, int rows, int heads, RopeParams r, long pos0) =>
        K("rope_rows").Launch(LaunchShape.Grid1((long)rows * heads, Pad32(r.HeadDim)),
            _a.Clear().Add(x).Add(heads).Add(r.HeadDim).Add(r.RopeDims).Add(r.Neox ? 1 : 0).Add(pos0).Add(r.Scale).Add(r.ThetaScale), Stream);

    /// <summary>RoPE of rows [n][heads][head dim], row t at position <paramref name="pos"/>[t] (device int array).</summary>
    public void RopeAt(ulong x, int rows, int heads, RopeParams r, ulong pos) =>
        K("rope_rows_at").Launch(LaunchShape.Grid1((long)rows * heads, Pad32(r.HeadDim)),
            _a.Clear().Add(x).Add(heads).Add(r.HeadDim).Add(r.RopeDims).Add(r.Neox ? 1 : 0).Add(pos).Add(r.Scale).Add(r.ThetaScale), Stream);

    /// <summary>Stores n tokens' keys (rotated at pos0 + t, f16) and values (f16) at slots slot0 + t; with
    /// <paramref name="at"/> (a <see cref="DecodeStep"/> on the device) the position and slot are read from there.</summary>
    public void AppendF16(ulong k, ulong v, int n, int kvHeads, RopeParams r, long pos0, long slot0, long cap, DeviceBuffer kc, DeviceBuffer vc, ulong bt,
        ulong at = 0, QueryRope query = default, ulong rows = 0) => AppendF16(k, v, n, kvHeads, r, pos0, slot0, cap, kc.Pointer, vc.Pointer, bt, at, query, rows);

    /// <summary>The same into f16 rows at device addresses (a KVQuant sequence's <see cref="PrefillScratch"/>). With
    /// <paramref name="query"/> the same launch rotates the chunk's query rows as <see cref="Rope"/> would (at the
    /// step's query position when <paramref name="at"/> is given). With <paramref name="rows"/> (model.cu DecodeRow
    /// [n], <see cref="DecodeRows"/>) the n rows are decode tokens of as many sequences, each with its own table, slot
    /// and positions (pos0, slot0 and bt unused).</summary>
    public void AppendF16(ulong k, ulong v, int n, int kvHeads, RopeParams r, long pos0, long slot0, long cap, ulong kc, ulong vc, ulong bt,
        ulong at = 0, QueryRope query = default, ulong rows = 0) =>
        K("kv_append_f16").Launch(LaunchShape.Grid1((long)n * kvHeads, Pad32(r.HeadDim)),
            _a.Clear().Add(k).Add(v).Add(kvHeads).Add(r.HeadDim).Add(r.RopeDims).Add(r.Neox ? 1 : 0).Add(pos0).Add(slot0).Add(cap)
              .Add(r.Scale).Add(r.ThetaScale).Add(kc).Add(vc).Add(bt).Add(at).Add(query.Q).Add(query.Group).Add(query.Pos0).Add(rows), Stream);

    /// <summary>Split partials of causal attention over the f16 cache, then their merge into <paramref name="output"/>;
    /// with <paramref name="at"/> (a <see cref="DecodeStep"/> on the device) the token count is read from there. With
    /// <paramref name="rows"/> (as <see cref="AppendF16(ulong, ulong, int, int, RopeParams, long, long, long, ulong, ulong, ulong, ulong, QueryRope, ulong)"/>'s)
    /// each of the n rows attends over its own sequence, <paramref name="split"/> giving the most splits of any row.</summary>
    public void AttentionF16(ulong q, DeviceBuffer kc, DeviceBuffer vc, long cap, int kvHeads, int group, int headDim, long count,
        int n, AttentionSplit split, float scale, ulong part, ulong output, ulong bt, ulong at = 0, ulong outputF16 = 0, ulong rows = 0)
    {
        K($"attn_f16_d{headDim}_g{group}").Launch(new LaunchShape((uint)split.Splits, (uint)kvHeads, (uint)n, 128),
            _a.Clear().Add(q).Add(kc).Add(vc).Add(cap).Add(kvHeads).Add(count).Add(n).Add((long)split.PerSplit).Add(split.PartStride).Add(scale).Add(part).Add(bt).Add(at)
              .Add(rows), Stream);
        Merge(part, split, n, kvHeads, group, headDim, output, outputF16, rows);
    }

    /// <summary>The sequence's angle table (model.cu rope_table): <paramref name="rows"/> rows of (cos, sin) per pair.</summary>
    public void RopeTable(long rows, RopeParams r, DeviceBuffer table) =>
        K("rope_table").Launch(LaunchShape.Grid1(rows, Pad32(r.RopeDims / 2)), _a.Clear().Add(r.RopeDims / 2).Add(r.Scale).Add(r.ThetaScale).Add(table), Stream);

    public void AppendNuqKeys(ulong k, int n, int kvHeads, int headDim, long slot0, NuqDeviceLayer l, int sink, ulong sinkK, ulong bt, ulong at = 0,
        ulong rows = 0) =>
        K("nuq_append_keys").Launch(LaunchShape.Grid1((long)n * kvHeads, 32),
            _a.Clear().Add(k).Add(kvHeads).Add(headDim).Add(slot0).Add(l.Capacity).Add(l.KeyBits).Add(l.KeySlots).Add(l.KZero).Add(l.KRange)
              .Add(l.KMids).Add(l.KMidCount).Add(l.KCodes).Add(l.KSlotV).Add(l.KSlotC).Add(sink).Add(sinkK).Add(bt).Add(at).Add(rows), Stream);

    public void AppendNuqValues(ulong v, int n, int kvHeads, int headDim, long slot0, NuqDeviceLayer l, int sink, ulong sinkV, ulong bt, ulong at = 0,
        ulong rows = 0) =>
        K("nuq_append_values").Launch(LaunchShape.Grid1((long)n * kvHeads, 32),
            _a.Clear().Add(v).Add(kvHeads).Add(headDim).Add(slot0).Add(l.Capacity).Add(l.ValueBits).Add(l.ValueOutliersPerTail).Add(l.VMids)
              .Add(l.VMidCount).Add(l.VCodes).Add(l.VZeroRange).Add(l.VSlotV).Add(l.VSlotC).Add(sink).Add(sinkV).Add(bt).Add(at).Add(rows), Stream);

    public void AttentionNuq(ulong q, NuqDeviceLayer l, DeviceBuffer table, int kvHeads, int group, int headDim, long count, int n,
        AttentionSplit split, float scale, ulong part, ulong output, int sink, (ulong K, ulong V) sinks, RopeParams r, ulong bt, ulong at = 0,
        ulong outputF16 = 0, ulong rows = 0) =>
        AttentionNuq(q, l, table, kvHeads, group, headDim, count, n, split, scale, part, output, sink, sinks, r, bt, default, at, outputF16, rows);

    /// <summary>The same with a block list per KV head (<paramref name="heads"/>: model.cu HeadBlocks; Offload/OffloadedKvSequence):
    /// head h reads its own chosen blocks, <paramref name="count"/> being the longest head's tokens. <paramref name="at"/>: as
    /// <see cref="AttentionF16"/>'s.</summary>
    public void AttentionNuq(ulong q, NuqDeviceLayer l, DeviceBuffer table, int kvHeads, int group, int headDim, long count, int n,
        AttentionSplit split, float scale, ulong part, ulong output, int sink, (ulong K, ulong V) sinks, RopeParams r, ulong bt, HeadBlocks heads,
        ulong at = 0, ulong outputF16 = 0, ulong rows = 0)
    {
        var keys = NuqKeyArgs.Of(l);
        K($"attn_nuq_d{headDim}_g{group}").Launch(new LaunchShape((uint)split.Splits, (uint)kvHeads, (uint)n, 128),
            _a.Clear().Add(q).Add(keys).Add(l.VZeroRange).Add(l.VSlotV).Add(l.VSlotC).Add(l.VLevels).Add(sinks.K).Add(sinks.V).Add(table)
              .Add(l.Capacity).Add(kvHeads).Add(count).Add(n).Add((long)split.PerSplit).Add(split.PartStride).Add(scale).Add(part)
              .Add(l.KeyBits).Add(l.ValueBits).Add(l.KeySlots).Add(2 * l.ValueOutliersPerTail).Add(sink).Add(r.RopeDims).Add(r.Neox ? 1 : 0).Add(bt)
              .Add(heads).Add(at).Add(rows), Stream);
        Merge(part, split, n, kvHeads, group, headDim, output, outputF16, rows);
    }

    /// <summary>Folds n new pre-RoPE keys (f32 [n][KV dim], positions pos0..) into the per-block post-RoPE min/max
    /// summaries <paramref name="sum"/> ([KV head][maxBlocks][min | max][head dim] f16; model.cu offload_summarize).</summary>
    public void OffloadSummarize(ulong k, int n, int kvHeads, RopeParams r, long pos0, long maxBlocks, DeviceBuffer sum)
    {
        long blocks = (pos0 + n - 1) / CudaKvCache.BlockTokens - pos0 / CudaKvCache.BlockTokens + 1;
        K("offload_summarize").Launch(new LaunchShape((uint)blocks, (uint)kvHeads, 1, (uint)r.HeadDim),
            _a.Clear().Add(k).Add(n).Add(kvHeads).Add(r.HeadDim).Add(r.RopeDims).Add(r.Neox ? 1 : 0).Add(pos0).Add(r.Scale).Add(r.ThetaScale)
              .Add(maxBlocks).Add(sum), Stream);
    }

    /// <summary>Row estimates of blocks [0, visible) for one query token (model.cu offload_score): est [KV head][block][group].</summary>
    public void OffloadScore(ulong q, int group, int headDim, int kvHeads, long visible, long maxBlocks, DeviceBuffer sum, float scale, float spread, ulong est) =>
        K("offload_score").Launch(new LaunchShape((uint)((visible + 7) / 8), (uint)kvHeads, 1, 256),
            _a.Clear().Add(q).Add(group).Add(headDim).Add(kvHeads).Add(visible).Add(maxBlocks).Add(sum).Add(scale).Add(spread).Add(est), Stream);

    /// <summary>Runs <paramref name="count"/> block copies listed at <paramref name="jobs"/> (model.cu CopyJob: src, dst, bytes).</summary>
    public void OffloadCopy(ulong jobs, int count, CudaStream? stream) =>
        K("offload_copy").Launch(LaunchShape.Grid1(count, 256), _a.Clear().Add(jobs), stream);

    /// <summary>Tiled prefill attention (model.cu attn_tile): RB query rows share each staged key/value tile. f16
    /// cache when <paramref name="nuq"/> is null (then <paramref name="kc"/>/<paramref name="vc"/>), else the KVQuant layer.</summary>
    public void AttentionTile(ulong q, DeviceBuffer? kc, DeviceBuffer? vc, NuqDeviceLayer? nuq, DeviceBuffer? table, long cap, int kvHeads,
        int group, int headDim, long count, int n, AttentionSplit split, float scale, ulong part, ulong output, int sink, (ulong K, ulong V) sinks,
        RopeParams r, ulong bt)
    {
        if (nuq == null) AttentionTileF16(q, kc!.Pointer, vc!.Pointer, cap, kvHeads, group, headDim, count, n, split, scale, part, output, bt);
        else LaunchTile($"attn_tile_nuq_d{headDim}", q, PagedNuqArgs(nuq, table!, sink, sinks, r, bt), cap, kvHeads, group, headDim, count, n, split, scale, part, output);
    }

    /// <summary>Tiled prefill attention over f16 rows [KV head][cap][head dim] through block table <paramref name="bt"/>
    /// (an f16 cache, or a KVQuant sequence's <see cref="PrefillScratch"/> with its identity table).</summary>
    public void AttentionTileF16(ulong q, ulong kc, ulong vc, long cap, int kvHeads, int group, int headDim, long count, int n, AttentionSplit split,
        float scale, ulong part, ulong output, ulong bt) =>
        LaunchTile($"attn_tile_f16_d{headDim}", q, new TileArgs { Kc = kc, Vc = vc, Bt = bt }, cap, kvHeads, group, headDim, count, n, split, scale, part, output);

    /// <summary>Tiled prefill attention over a KVQuant cache in the contiguous decode layout (model.cu load_tile mode 2).</summary>
    public void AttentionTileContiguous(ulong q, Attention.NuqLayerCache cache, DeviceBuffer table, int kvHeads, int group, int headDim, long count, int n,
        AttentionSplit split, float scale, ulong part, ulong output, int sink, RopeParams r) =>
        LaunchTile($"attn_tile_contig_d{headDim}", q, ContiguousArgs(cache, table, sink, r), 0, kvHeads, group, headDim, count, n, split, scale, part, output);

    /// <summary>Decodes tokens [0, <paramref name="tokens"/>) of one layer of the model's paged KVQuant layout into
    /// <paramref name="scratch"/> (f16 rows, post-RoPE keys: model.cu nuq_to_f16, the values attn_mma_nuq's tiles hold).</summary>
    public void NuqToF16(NuqDeviceLayer nuq, DeviceBuffer table, int sink, (ulong K, ulong V) sinks, RopeParams r, ulong bt, long cap, int kvHeads,
        long tokens, PrefillScratch scratch) =>
        LaunchToF16($"nuq_to_f16_nuq_d{r.HeadDim}", PagedNuqArgs(nuq, table, sink, sinks, r, bt), cap, r.HeadDim, kvHeads, tokens, scratch);

    /// <summary>The same for a cache in the contiguous decode layout.</summary>
    public void ContiguousToF16(Attention.NuqLayerCache cache, DeviceBuffer table, int sink, RopeParams r, int kvHeads, long tokens, PrefillScratch scratch) =>
        LaunchToF16($"nuq_to_f16_contig_d{r.HeadDim}", ContiguousArgs(cache, table, sink, r), 0, r.HeadDim, kvHeads, tokens, scratch);

    private void LaunchToF16(string name, TileArgs args, long cap, int headDim, int kvHeads, long tokens, PrefillScratch scratch)
    {
        if (tokens <= 0) return;
        if (tokens > scratch.Tokens) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"decode of {tokens} tokens into a scratch of {scratch.Tokens}");
        int shared = (TileKeys * (headDim + 1) + TileKeys * headDim) * 4;
        var k = K(name);
        if (_tileShared.Add(k.Name)) k.SetMaxDynamicShared(shared);
        k.Launch(new LaunchShape((uint)((tokens + TileKeys - 1) / TileKeys), (uint)kvHeads, 1, 256, (uint)shared),
            _a.Clear().Add(args).Add(cap).Add(tokens).Add(scratch.Tokens).Add(scratch.K).Add(scratch.V), Stream);
    }

    private static TileArgs PagedNuqArgs(NuqDeviceLayer nuq, DeviceBuffer table, int sink, (ulong K, ulong V) sinks, RopeParams r, ulong bt) => new()
    {
        L = NuqKeyArgs.Of(nuq),
        Vzr = nuq.VZeroRange.Pointer, VSlotV = nuq.VSlotV.Pointer, VSlotC = nuq.VSlotC.Pointer, VLev = nuq.VLevels.Pointer,
        SinkK = sinks.K, SinkV = sinks.V, Table = table.Pointer,
        KBits = nuq.KeyBits, VBits = nuq.ValueBits, S = nuq.KeySlots, VS = 2 * nuq.ValueOutliersPerTail, Sink = sink,
        RopeDims = r.RopeDims, Neox = r.Neox ? 1 : 0, Bt = bt,
    };

    private static TileArgs ContiguousArgs(Attention.NuqLayerCache cache, DeviceBuffer table, int sink, RopeParams r)
    {
        var a = cache.Arrays;
        var (sinkK, sinkV) = cache.SinkBuffers;
        return new TileArgs
        {
            L = new NuqKeyArgs(a.KCodes, a.KSlotV, a.KSlotC, a.KZero, a.KRange, a.KLevels, a.VCodes),
            Vzr = a.VZeroRange, VSlotV = a.VSlotV, VSlotC = a.VSlotC, VLev = a.VLevels, SinkK = sinkK, SinkV = sinkV, Table = table.Pointer,
            KBits = cache.KeyBits, VBits = cache.KeyBits, S = cache.KeySlots, VS = cache.ValueSlots, Sink = sink, RopeDims = r.RopeDims,
            Neox = r.Neox ? 1 : 0, ContiguousPadded = cache.Padded,
        };
    }

    /// <summary>How prefill chunks attend over KVQuant caches (<see cref="Model.NuqPrefill"/>; read by every sequence
    /// at each chunk, so a test may flip it between calls).</summary>
    public NuqPrefill NuqPrefill { get; set; }

    /// <summary>Prefill chunks on tensor cores (attn_mma_*: f16 products, the fast mode of f16 weights) instead of the
    /// f32 CUDA-core tiles (attn_tile_*, exact to f32 rounding).</summary>
    public bool TensorCorePrefill { get; set; }

    private void LaunchTile(string name, ulong q, TileArgs args, long cap, int kvHeads, int group, int headDim, long count, int n,
        AttentionSplit split, float scale, ulong part, ulong output)
    {
        int dp = headDim + 1, shared, rowsPerBlock, threads;
        if (TensorCorePrefill)
        {
            name = name.Replace("attn_tile_", "attn_mma_");
            rowsPerBlock = MmaRows;
            threads = 128;
            shared = (TileKeys * dp + TileKeys * headDim) * 4 + (TileKeys * (headDim + 8) + headDim * (TileKeys + 8) + MmaRows * (headDim + 8)) * 2;
        }
        else
        {
            rowsPerBlock = TileRows;
            threads = 256;
            shared = (TileRows * dp + TileKeys * dp + TileKeys * headDim + TileRows * TileKeys) * 4;
        }
        var k = K(name);
        if (_tileShared.Add(k.Name)) k.SetMaxDynamicShared(shared);
        int rowBlocks = (n * group + rowsPerBlock - 1) / rowsPerBlock;
        k.Launch(new LaunchShape((uint)split.Splits, (uint)kvHeads, (uint)rowBlocks, (uint)threads, (uint)shared),
            _a.Clear().Add(q).Add(args).Add(cap).Add(kvHeads).Add(group).Add(count).Add(n).Add((long)split.PerSplit).Add(split.PartStride).Add(scale).Add(part), Stream);
        Merge(part, split, n, kvHeads, group, headDim, output);
    }

    /// <summary>attn_merge of the split partials into <paramref name="output"/>; output 0 keeps the partials only (a
    /// shard of a sequence-parallel cache merges them with the other shards': Distributed/ShardedKvSequence).</summary>
    private void Merge(ulong part, AttentionSplit split, int n, int kvHeads, int group, int headDim, ulong output, ulong outputF16 = 0, ulong rows = 0)
    {
        if (output == 0) return;
        if (split.PartStride != split.Splits) throw new ArgumentException($"attn_merge reads {split.Splits} splits packed per row, not {split.PartStride} slots", nameof(split));
        K("attn_merge").Launch(LaunchShape.Grid1((long)n * kvHeads * group, Pad32(headDim)),
            _a.Clear().Add(part).Add(split.Splits).Add(headDim).Add(output).Add(outputF16).Add(rows).Add(kvHeads * group), Stream);
    }

    private const int TileRows = 32, TileKeys = 64, MmaRows = 64;   // model.cu RB, KT, MR
    private readonly HashSet<string> _tileShared = new();

    /// <summary>model.cu's TileArgs (176 bytes), passed by value.</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct TileArgs
    {
        public ulong Kc, Vc;
        public NuqKeyArgs L;
        public ulong Vzr, VSlotV, VSlotC, VLev, SinkK, SinkV, Table;
        public int KBits, VBits, S, VS, Sink, RopeDims, Neox;
        public long ContiguousPadded;
        public ulong Bt;
    }

    /// <summary>model.cu's NuqLayer: the key arrays and the value codes, passed by value.</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private readonly record struct NuqKeyArgs(ulong KCodes, ulong KSlotV, ulong KSlotC, ulong KZero, ulong KRange, ulong KLevels, ulong VCodes)
    {
        public static NuqKeyArgs Of(NuqDeviceLayer l) =>
            new(l.KCodes.Pointer, l.KSlotV.Pointer, l.KSlotC.Pointer, l.KZero.Pointer, l.KRange.Pointer, l.KLevels.Pointer, l.VCodes.Pointer);
    }

    private static int Pad32(int x) => (x + 31) / 32 * 32;

    public void Dispose()
    {
        _a.Dispose();
        _module.Dispose();
    }
}

/// <summary>model.cu's HeadBlocks (offload): per KV head, the chosen blocks' positions and the tokens read; stride 0 = none.</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal readonly record struct HeadBlocks(ulong Pos, ulong Count, long Stride);

/// <summary>How <see cref="ModelKernels.Gemv"/> makes its input row (model.cu GEMV_F16IN, GEMV_NORM, GEMV_SWIGLU).</summary>
internal enum GemvInput
{
    F16 = 0,
    Norm = 1,
    SwiGlu = 2,
}

/// <summary>model.cu's CopyJob (24 bytes).</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal readonly record struct CopyJob(ulong Src, ulong Dst, long Bytes);

/// <summary>RoPE as the kernels take it: the CPU <see cref="Rope"/>'s float recurrence (theta = pos /
/// scale, times base^(-2/ropeDims) per pair).</summary>
internal readonly record struct RopeParams(int HeadDim, int RopeDims, bool Neox, float Scale, float ThetaScale)
{
    public static RopeParams For(Kvq.Model.ModelConfig c) =>
        new(c.HeadDim, c.RopeDims, c.RopeStyle == RopeStyle.Neox, c.RopeScale, MathF.Pow(c.RopeBase, -2.0f / c.RopeDims));
}

/// <summary>How one attention call is cut along the stored tokens: <see cref="Splits"/> ranges of
/// <see cref="PerSplit"/> tokens (a multiple of 128), enough blocks to fill the device, within the partials' room.</summary>
internal readonly record struct AttentionSplit(int Splits, int PerSplit, int Stride = 0)
{
    /// <summary>Split slots per query row in the partials (the kernels' <c>splits</c> argument): <see cref="Splits"/>,
    /// or a larger <see cref="Stride"/> where several shards' partials share one buffer (Distributed/ShardSplitPlan).</summary>
    public int PartStride => Stride > 0 ? Stride : Splits;

    public static AttentionSplit For(long tokens, int n, int kvHeads, int multiprocessors, int maxStates)
    {
        int tiles = (int)Math.Max(1, (tokens + 127) / 128);
        int want = Math.Max(1, multiprocessors * 4 / Math.Max(1, n * kvHeads));
        int cap = Math.Max(1, maxStates / Math.Max(1, n));
        int splits = Math.Clamp(want, 1, Math.Min(tiles, cap));
        int per = (tiles + splits - 1) / splits;
        return new AttentionSplit((tiles + per - 1) / per, per * 128);
    }
}
