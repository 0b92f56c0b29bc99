using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>
/// A Llama-family decoder on a CUDA device: weights, activations and the KV cache in device memory, cuBLAS for the
/// products, model.cu for RMSNorm, RoPE, SwiGLU, residual adds and attention. The same straight-line forward pass
/// as the CPU <see cref="Transformer"/> (keys handed to the cache before RoPE, queries rotated here), so both give
/// the same logits to f32 rounding with f32 weights; with f16 weights the products take f16 activations.
/// Only the logits travel back to the host. Batched steps (<see cref="ForwardBatch"/>, the serving engine's): the rows
/// of all sequences go through each weight matrix in one cuBLAS product, attention per sequence over its own cache.
/// </summary>
public sealed class CudaTransformer : ChunkedLanguageModel, IBatchedLanguageModel, IDisposable
{
    private readonly CudaContext _ctx;
    private readonly KernelLoader _loader;
    private readonly ModelKernels _kernels;
    private readonly CublasHandle _blas;
    private readonly DeviceWeights _w;
    private readonly RopeParams _rope;
    private readonly bool _f16, _contiguousNuq;
    private readonly bool _gemvShapes;   // every matrix takes model.cu gemv_f16 (f16 weights, widths multiples of 8)
    private Attention.DecodeKernels? _contiguousKernels;   // the contiguous layout's decode and append modules, on first use

    private Attention.DecodeKernels ContiguousKernels() => _contiguousKernels ??= new Attention.DecodeKernels(_ctx, _loader);
    private Distributed.ShardKernels? _shardKernels;   // shard_combine.cu, compiled on first use
    // Activations for one chunk of at most MaxBatch tokens, row-major [token][width].
    // A batched step's ids, positions and logit rows (BatchLayout), uploaded once per step.
    private readonly DeviceBuffer _step;
    private readonly int[] _stepHost;
    // q, k and v of a chunk: [n][QDim] rows, then [n][KvDim] twice (each projection's own product); for a single row
    // the stacked product writes them side by side ([QDim | KvDim | KvDim]). Gate and up alike.
    private readonly DeviceBuffer _ids, _x, _xn, _xh, _qkv, _att, _atth, _proj, _gateUp, _gateh, _logits;
    private readonly DeviceBuffer _qs;   // the next layer's predicted query (offload speculation)
    // Single-token decode steps replayed from a CUDA graph: the step's ints (DecodeStep) go up in one copy before each
    // replay; cuBLAS works in a workspace of its own so that captured and direct products pick the same kernels.
    private readonly DecodeGraph _graph;
    private readonly DeviceBuffer _decodeStep, _blasWorkspace;
    private readonly int[] _decodeStepHost = new int[DecodeStep.Ints];
    private bool _graphLogits;   // the last step's logits row is in _logits already (computed inside the graph)
    // A batched step's one-token rows of one paged cache: one append and one attention launch a layer for all of them.
    private readonly DecodeRows _rows;
    private bool[] _batched = new bool[64];

    public override ModelConfig Config { get; }
    public override KvShape KvShape => Config.CreateKvShape();
    public override string Device => $"cuda: {_ctx.Device.Name} ({_ctx.Device.Arch}), {(_f16 ? "f16" : "f32")} weights, decode graphs " +
        (GraphFailure != null ? $"off after a failed capture ({GraphFailure.Message})" : _decodeGraphs ? "on" : "off") +
        (Fused ? ", fused decode products" : "") +
        $", KVQuant prefill {NuqPrefillSwitch.Name(NuqPrefill)}";
    public override int Threads => 1;

    /// <summary>False: the model attends only over its own device caches (<see cref="CreateSequence"/>, <see cref="CreateCache"/>).</summary>
    public bool AttendsOverHostCaches => false;
    public override int MaxBatch { get; }
    /// <summary>Most tokens one <see cref="ForwardBatch"/> step carries (all segments together): <see cref="MaxBatch"/>.</summary>
    public int MaxBatchTokens => MaxBatch;

    /// <summary>Prefill attention on tensor cores (only with f16 weights; see <see cref="CudaModelOptions"/>).</summary>
    public bool TensorCorePrefill
    {
        get => _kernels.TensorCorePrefill;
        set => _kernels.TensorCorePrefill = value && _f16;
    }
    /// <summary>How prefill chunks attend over KVQuant caches (<see cref="CudaModelOptions.NuqPrefill"/>; env KVQ_NUQ_PREFILL);
    /// applies with <see cref="TensorCorePrefill"/> only.</summary>
    public NuqPrefill NuqPrefill
    {
        get => _kernels.NuqPrefill;
        set => _kernels.NuqPrefill = value;
    }
    /// <summary>Single-token decode steps (<see cref="ChunkedLanguageModel.Forward"/> of one token over a paged
    /// <see cref="CudaKvSequence"/>) replayed from a CUDA graph: one launch a token instead of ~20 a layer. Off: every
    /// kernel launched directly, the reference path (<see cref="CudaModelOptions.DecodeGraphs"/>; env KVQ_CUDA_GRAPHS).</summary>
    public bool DecodeGraphs
    {
        get => _decodeGraphs;
        set
        {
            _decodeGraphs = value;
            if (value) GraphFailure = null;
            else _graph.Drop();
        }
    }
    private bool _decodeGraphs;

    /// <summary>One-row steps with f16 weights (decode, graph or direct) run each product as one model.cu gemv_f16 launch that
    /// also makes its input (the RMSNorm, SwiGLU) or adds to the residual stream: 6 launches a layer instead of 10; off:
    /// cuBLAS and the element-wise kernels (<see cref="CudaModelOptions.FusedDecodeProducts"/>; env KVQ_FUSED_PRODUCTS).</summary>
    public bool FusedDecodeProducts
    {
        get => _fusedProducts;
        set
        {
            _fusedProducts = value;
            _graph.Drop();   // a captured step has the other kernels in it
        }
    }
    private bool _fusedProducts;

    /// <summary>A batched step's one-token rows of one paged cache in one append and one attention launch a layer
    /// (<see cref="DecodeRows"/>, on); off, each sequence launches its own: the same values (BatchedDecodeRowsGpuTests
    /// compares the two bit for bit).</summary>
    public bool BatchedDecodeRows { get; set; } = true;
    public const string FusedProductsEnv = "KVQ_FUSED_PRODUCTS";
    private bool Fused => _fusedProducts && _gemvShapes;

    /// <summary>Why graphs were turned off by a capture that failed (the step itself had run directly, so the model goes
    /// on without them); null when none did.</summary>
    public CudaException? GraphFailure { get; private set; }

    /// <summary>Decode steps replayed from a graph and graphs captured by this model so far.</summary>
    public (long Replays, long Captures) GraphStats => (_graph.Replays, _graph.Captures);

    public CudaDeviceInfo DeviceInfo => _ctx.Device;
    /// <summary>The device context the model lives in (an NCCL communicator joins on it).</summary>
    public CudaContext Context => _ctx;
    /// <summary>Device bytes of the weights.</summary>
    public long WeightBytes => _w.Bytes;
    /// <summary>Free and total bytes of the device (cuMemGetInfo).</summary>
    public (long Free, long Total) DeviceMemory()
    {
        _ctx.MakeCurrent();
        return _ctx.MemoryInfo();
    }

    private CudaTransformer(CudaContext ctx, ModelWeights weights, CudaModelOptions o)
        : this(ctx, weights.Config, o, k => new DeviceWeights(ctx, weights, o.Weights)) { }

    private CudaTransformer(CudaContext ctx, ModelConfig config, CudaModelOptions o, uint seed)
        : this(ctx, config, o, k => DeviceWeights.Random(ctx, k, config, o.Weights, seed)) { }

    private CudaTransformer(CudaContext ctx, ModelConfig config, CudaModelOptions o, Func<ModelKernels, DeviceWeights> weights)
    {
        _ctx = ctx;
        Config = config;
        var extended = config.ExtendedFeatures();
        if (extended.Count > 0)
            throw new NotSupportedException($"the CUDA backend does not implement {string.Join(", ", extended)} " +
                $"(a {config.Architecture} model needs it); run this model on the CPU backend");
        MaxBatch = Math.Max(1, o.MaxBatch);
        _f16 = o.Weights == CudaWeightType.F16;
        _gemvShapes = _f16 && new[] { config.Dim, config.QDim, config.FfnDim }.All(ModelKernels.GemvFits);
        _fusedProducts = OnOffSwitch.Resolve(o.FusedDecodeProducts, FusedProductsEnv, Environment.GetEnvironmentVariable(FusedProductsEnv));
        _contiguousNuq = o.ContiguousNuq;
        var shape = KvShape;
        CudaKvSequence.CheckShape(shape);
        _rope = RopeParams.For(Config);
        _loader = new KernelLoader(ctx);
        _kernels = new ModelKernels(_loader)
        {
            TensorCorePrefill = _f16 && o.TensorCorePrefill,
            NuqPrefill = NuqPrefillSwitch.Resolve(o.NuqPrefill, Environment.GetEnvironmentVariable(NuqPrefillSwitch.EnvVar)),
        };
        _blas = new CublasHandle(ctx);
        _graph = new DecodeGraph(_kernels, _blas);
        _rows = new DecodeRows(ctx);
        _decodeGraphs = DecodeGraph.Enabled(o.DecodeGraphs, Environment.GetEnvironmentVariable(DecodeGraph.EnvSwitch));
        var c = Config;
        var owned = new List<IDisposable>();
        DeviceBuffer A(long floats, int elem = 4)
        {
            var b = ctx.Allocate(Math.Max(floats * elem, 256));
            owned.Add(b);
            return b;
        }
        try
        {
            _w = weights(_kernels);
            int b = MaxBatch;
            _ids = A(b);
            _step = A(BatchLayout.StagingInts(b));
            _stepHost = new int[BatchLayout.StagingInts(b)];
            _x = A((long)b * c.Dim);
            _xn = A((long)b * c.Dim);
            _xh = A((long)b * c.Dim, 2);
            _qkv = A((long)b * (c.QDim + 2 * c.KvDim));
            _att = A((long)b * c.QDim);
            _atth = A((long)b * c.QDim, 2);
            _proj = A((long)b * c.Dim);
            _gateUp = A((long)b * 2 * c.FfnDim);
            _gateh = A((long)b * c.FfnDim, 2);
            _logits = A((long)b * c.VocabSize);
            _qs = A(c.QDim);
            _decodeStep = A(DecodeStep.Ints);
            // cuBLAS's own default: 32 MiB on Hopper and later, 4 MiB before.
            _blasWorkspace = A(ctx.Device.ComputeMajor >= 9 ? 32L << 20 : 4L << 20, 1);
            _blas.SetWorkspace(_blasWorkspace);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            _w?.Dispose();
            _graph.Dispose();
            _blas.Dispose();
            _kernels.Dispose();
            throw;
        }
    }

    /// <summary>Uploads <paramref name="weights"/> to the device. Throws <see cref="CudaUnavailableException"/>
    /// where there is no CUDA driver or device, <see cref="NotSupportedException"/> for shapes the kernels lack.</summary>
    public static CudaTransformer Load(ModelWeights weights, CudaModelOptions? options = null)
    {
        CudaArchitectureSupport.Check(weights.Config);
        var o = options ?? new CudaModelOptions();
        var ctx = CudaContext.Create(o.DeviceOrdinal);
        try
        {
            return new CudaTransformer(ctx, weights, o);
        }
        catch
        {
            ctx.Dispose();
            throw;
        }
    }

    /// <summary>A sequence whose cache lives on this device, with room for <paramref name="maxTokens"/> tokens; with
    /// <see cref="Sharding"/> set, a sequence-parallel one over that many shards, cut evenly.</summary>
    public override IKvSequence CreateSequence(KvCacheConfig config, int maxTokens)
    {
        _ctx.MakeCurrent();   // callers may run on another thread than Load's (the driver binds contexts to threads)
        if (config.Offload != null) return CreateOffloadedKvSequence(config, maxTokens, maxTokens);
        if (Sharding is { } sp) return CreateShardedSequence(config, Distributed.ShardLayout.Even(maxTokens, sp.Shards), sp.Exchange);
        return CreateCache(config, maxTokens).CreateOwnedSequence(maxTokens);
    }

    /// <summary>A KVQuant sequence of <paramref name="config"/> (its profile's codecs) on the device's host tier under
    /// <paramref name="config"/>'s offload budget (<see cref="Offload.OffloadedKvSequence"/>, issue 20): its first
    /// <paramref name="prefillTokens"/> tokens are prefilled on the device, then after each decode step every whole block
    /// but the first and those of the budget's recent window moves to pinned host memory (<see cref="Offload.HostSpill"/>),
    /// tiers sized by <see cref="Offload.OffloadSizes.For"/>. What the tier does not take is a <see cref="KvSpecException"/>
    /// (<see cref="Offload.OffloadFormat"/>).</summary>
    public Offload.OffloadedKvSequence CreateOffloadedKvSequence(KvCacheConfig config, int maxTokens, int prefillTokens)
    {
        _ctx.MakeCurrent();
        CudaKvSequence.CheckShape(KvShape);
        if (Sharding != null) throw new KvSpecException("offloading on the CUDA device runs on one GPU (no sequence parallelism, --gpus)");
        var codecs = Offload.OffloadFormat.Codecs(config, KvShape);
        var budget = config.Offload!;
        var spill = Offload.HostSpill.ForRecent(budget.RecentTokens);
        return new Offload.OffloadedKvSequence(_ctx, _kernels, KvShape, codecs, config.SinkTokens, maxTokens, budget,
            Offload.OffloadSizes.For(budget, maxTokens, prefillTokens, spill), spill);
    }

    /// <summary>Sequence parallelism for every sequence <see cref="CreateSequence"/> makes (the CLI's --gpus; null: one
    /// cache per sequence). The model disposes an exchange it is given here.</summary>
    public Distributed.SequenceParallel? Sharding { get; set; }

    /// <summary>A sequence-parallel sequence (docs/multigpu.md): its tokens cut into the shards of
    /// <paramref name="layout"/>, all on this device (checking mode, <paramref name="exchange"/> null), or this
    /// process's one shard with the others' attention states gathered through <paramref name="exchange"/>. The model's
    /// own KVQuant or f16 layout (not the contiguous decode layout); no prefix sharing or batching.</summary>
    public Distributed.ShardedKvSequence CreateShardedSequence(KvCacheConfig config, Distributed.ShardLayout layout, Distributed.IShardExchange? exchange = null)
    {
        _ctx.MakeCurrent();
        return CreateShardedSequence(config, CudaKvSequence.Check(config, KvShape), layout, exchange);
    }

    /// <summary>The same with KVQuant codecs given per layer (as <see cref="CreateKvQuantSequence"/>).</summary>
    public Distributed.ShardedKvSequence CreateShardedKvQuantSequence(Func<int, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)> layerCodecs, int sink,
        Distributed.ShardLayout layout, Distributed.IShardExchange? exchange = null)
    {
        _ctx.MakeCurrent();
        var codecs = Enumerable.Range(0, Config.Layers).Select(layerCodecs).ToArray();
        var name = codecs[0].Keys[0].Spec.Name;
        return CreateShardedSequence(new KvCacheConfig(name, name, 32, sink), codecs, layout, exchange);
    }

    private Distributed.ShardedKvSequence CreateShardedSequence(KvCacheConfig config, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? codecs,
        Distributed.ShardLayout layout, Distributed.IShardExchange? exchange)
    {
        _shardKernels ??= new Distributed.ShardKernels(_loader);
        return new Distributed.ShardedKvSequence(_ctx, _kernels, _shardKernels, KvShape, config, codecs, layout, exchange, MaxBatch);
    }

    /// <summary>A paged cache on this device whose sequences (<see cref="CudaKvCache.CreateSequence"/>) share a pool of
    /// <paramref name="poolTokens"/> tokens: many sequences, each taking 128-token blocks only as it grows.</summary>
    public CudaKvCache CreateCache(KvCacheConfig config, int poolTokens)
    {
        _ctx.MakeCurrent();
        CudaKvSequence.CheckShape(KvShape);
        return new CudaKvCache(_ctx, _kernels, KvLayoutPlan.Build(KvShape, config), poolTokens, _contiguousNuq ? ContiguousKernels : null);
    }

    /// <summary>A KVQuant sequence from codecs given per layer (one per KV head) instead of a calibration profile:
    /// for shapes no profile exists for (timing runs on random weights, research on hand-made codebooks).</summary>
    public CudaKvSequence CreateKvQuantSequence(Func<int, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)> layerCodecs, int sink, int maxTokens,
        bool? contiguousNuq = null)
    {
        _ctx.MakeCurrent();
        CudaKvSequence.CheckShape(KvShape);
        var codecs = Enumerable.Range(0, Config.Layers).Select(layerCodecs).ToArray();
        var name = codecs[0].Keys[0].Spec.Name;
        return new CudaKvCache(_ctx, _kernels, KvShape, new KvCacheConfig(name, name, 32, sink), maxTokens, codecs,
            contiguousNuq ?? _contiguousNuq ? ContiguousKernels : null).CreateOwnedSequence(maxTokens);
    }

    /// <summary>A paged KVQuant cache in the model's own layout from codecs given per layer (as <see cref="CreateKvQuantSequence"/>),
    /// whose sequences share a pool of <paramref name="poolTokens"/> tokens (batched steps over many of them: <see cref="ForwardBatch"/>).</summary>
    public CudaKvCache CreateKvQuantCache(Func<int, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)> layerCodecs, int sink, int poolTokens)
    {
        _ctx.MakeCurrent();
        CudaKvSequence.CheckShape(KvShape);
        var codecs = Enumerable.Range(0, Config.Layers).Select(layerCodecs).ToArray();
        var name = codecs[0].Keys[0].Spec.Name;
        return new CudaKvCache(_ctx, _kernels, KvShape, new KvCacheConfig(name, name, 32, sink), poolTokens, codecs, null);
    }

    /// <summary>A KVQuant sequence whose blocks can move to a pinned host tier and whose attention reads the blocks a
    /// budget chooses (<see cref="Offload.OffloadedKvSequence"/>, issue 20), codecs given per layer as
    /// <see cref="CreateKvQuantSequence"/>.</summary>
    public Offload.OffloadedKvSequence CreateOffloadedKvQuantSequence(Func<int, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)> layerCodecs, int sink,
        int maxTokens, Cache.Offload.KvOffloadBudget budget, Offload.OffloadSizes sizes)
    {
        _ctx.MakeCurrent();
        CudaKvSequence.CheckShape(KvShape);
        var codecs = Enumerable.Range(0, Config.Layers).Select(layerCodecs).ToArray();
        return new Offload.OffloadedKvSequence(_ctx, _kernels, KvShape, codecs, sink, maxTokens, budget, sizes);
    }

    /// <summary>
    /// Fills sequences of this model with <paramref name="tokens"/> tokens of synthetic KV: random keys and values
    /// (uniform in [-<paramref name="scale"/>, scale), made on the device per layer and chunk), appended to every
    /// sequence alike through the device encoders, as a prefill would hand them (keys pre-RoPE, rotated by the
    /// cache). For capacity and speed runs at lengths no prefill reaches in the time (2M tokens); the same seed gives
    /// the same keys and values. <paramref name="afterChunk"/> runs after each chunk is committed (tokens so far).
    /// </summary>
    public void FillSyntheticKv(IReadOnlyList<IKvSequence> sequences, int tokens, int chunk, uint seed, float scale = 1.5f, Action<int>? afterChunk = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        foreach (var s in sequences)
            if (s is not IDeviceKvSequence) throw new ArgumentException($"synthetic KV goes to this model's device sequences, not a {s.GetType().Name}", nameof(sequences));
        _ctx.MakeCurrent();
        var c = Config;
        using var k = _ctx.Allocate((long)chunk * c.KvDim * 4);
        using var v = _ctx.Allocate((long)chunk * c.KvDim * 4);
        for (int done = 0; done < tokens;)
        {
            int n = Math.Min(chunk, tokens - done);
            for (int l = 0; l < c.Layers; l++)
            {
                uint s = seed * 0x9E3779B1u ^ (uint)(done * 31 + l) * 0x85EBCA77u;
                _kernels.FillRandom(k.Pointer, (long)n * c.KvDim, false, s, scale);
                _kernels.FillRandom(v.Pointer, (long)n * c.KvDim, false, s ^ 0x5bd1e995u, scale);
                foreach (var seq in sequences) ((IDeviceKvSequence)seq).AppendDevice(l, k.Pointer, v.Pointer, n);
            }
            foreach (var seq in sequences) seq.Commit(n);
            done += n;
            afterChunk?.Invoke(done);
        }
        _ctx.Synchronize();
    }

    /// <summary>A model of <paramref name="config"/>'s shape with random weights made on the device (uniform,
    /// scaled by 1/sqrt(fan-in) so activations stay bounded; norms 1): for timing and capacity runs at sizes whose
    /// weights are not at hand (LLaMA-7B's), never for text.</summary>
    public static CudaTransformer CreateRandom(ModelConfig config, CudaModelOptions? options = null, uint seed = 1)
    {
        CudaArchitectureSupport.Check(config);
        var o = options ?? new CudaModelOptions();
        var ctx = CudaContext.Create(o.DeviceOrdinal);
        try
        {
            return new CudaTransformer(ctx, config, o, seed);
        }
        catch
        {
            ctx.Dispose();
            throw;
        }
    }

    protected override void Prepare(IKvSequence kv)
    {
        if (kv is not IDeviceKvSequence)
            throw new ArgumentException($"the CUDA model attends over its own device cache (CreateSequence), not a {kv.GetType().Name}", nameof(kv));
        _ctx.MakeCurrent();
    }

    protected override void ForwardChunk(ReadOnlySpan<int> tokens, IKvSequence kv)
    {
        var seq = (IDeviceKvSequence)kv;   // Prepare checked it
        var c = Config;
        int n = tokens.Length;
        _graphLogits = false;
        foreach (var id in tokens)
            if ((uint)id >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} is outside the vocabulary (0..{c.VocabSize - 1})");
        if (n == 1 && _decodeGraphs && seq is CudaKvSequence { GraphCapable: true } one && ReferenceEquals(one.Cache.Kernels, _kernels))
        {
            var split = one.DecodeSplit();
            if (_graph.Next(one, split) == DecodeGraphAction.Replay)
            {
                var step = one.BeginDecodeStep(tokens[0]);
                step.Pack(_decodeStepHost);
                _decodeStep.CopyFrom(_decodeStepHost);
                _graph.Replay();
                one.EndDecodeStep();
                one.Commit(1);
                _graphLogits = true;
                return;
            }
            DirectChunk(tokens, one);
            // The same step recorded for the next tokens of this shape: every kernel in it has just run directly.
            try
            {
                _kernels.PrepareDecodeGraph();
                _graph.Capture(one, split, () => RecordDecodeStep(one, split));
            }
            catch (CudaException e)
            {
                GraphFailure = e;   // reported in Device; the direct path is the reference, so nothing is lost but speed
                _decodeGraphs = false;
            }
            return;
        }
        DirectChunk(tokens, seq);
    }

    /// <summary>Launches a step of the chunk path into the graph being captured: the embedding of the token at
    /// <see cref="DecodeStep.TokenIndex"/>, every layer with position, slot and count read from the step's ints, the
    /// final norm and the logits row (left in _logits for <see cref="Logits"/>).</summary>
    private void RecordDecodeStep(CudaKvSequence one, AttentionSplit split)
    {
        var c = Config;
        ulong at = _decodeStep.Pointer;
        _kernels.Embed(_w.Embedding.Buffer, _f16, DecodeStep.Field(at, DecodeStep.TokenIndex), 1, c.Dim, _x.Pointer);
        Layers(1, one, 0, default, 0, new GraphStep(one, split, at));
        OutputRow(_x.Pointer);
    }

    /// <summary>A layer pass recorded into a decode graph: the sequence, its attention split and the step's device ints.</summary>
    private readonly record struct GraphStep(CudaKvSequence Sequence, AttentionSplit Split, ulong At);

    /// <summary>The chunk through every kernel launched directly (the reference path; prefill and decode).</summary>
    private void DirectChunk(ReadOnlySpan<int> tokens, IDeviceKvSequence seq)
    {
        var c = Config;
        int n = tokens.Length;
        _ids.CopyFrom(tokens);
        _kernels.Embed(_w.Embedding.Buffer, _f16, _ids, n, c.Dim, _x.Pointer);
        long pos0 = seq.Length;
        seq.BeginChunk(tokens);
        Layers(n, seq, pos0, default, 0);
        seq.Commit(n);
    }

    /// <summary>
    /// One step over the rows of several sequences (<see cref="IBatchedLanguageModel"/>): every weight matrix is one
    /// cuBLAS product over all rows (read once per step), RMSNorm, RoPE (each row at its own position) and SwiGLU run
    /// over all rows, K/V appends and attention per segment on its sequence's device cache, and only the wanted rows'
    /// logits are computed and copied back. The segments' sequences come from this model (<see cref="CreateSequence"/>,
    /// <see cref="CreateCache"/>, <see cref="CreateKvQuantSequence"/>). No allocation per step: ids, positions and
    /// logit rows go up in one copy into a buffer sized for <see cref="MaxBatchTokens"/>.
    /// </summary>
    public void ForwardBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments, Span<float> logits)
    {
        var c = Config;
        int n = tokens.Length;
        _graphLogits = false;
        int wanted = BatchLayout.Stage(tokens, segments, MaxBatch, c.VocabSize, _stepHost);
        if (logits.Length < (long)wanted * c.VocabSize)
            throw new ArgumentException($"logits hold {logits.Length} floats; {wanted} rows of {c.VocabSize} are wanted", nameof(logits));
        foreach (var s in segments)
        {
            if (s.Kv is not CudaKvSequence kv || !ReferenceEquals(kv.Cache.Kernels, _kernels))
                throw new ArgumentException($"the CUDA model attends over its own device caches (CreateSequence), not a {s.Kv.GetType().Name}", nameof(segments));
            if (kv.Length + s.Count > kv.Capacity)
                throw new InvalidOperationException($"CUDA KV cache full: {kv.Length} + {s.Count} tokens exceed its capacity of {kv.Capacity} (create the sequence with a larger maxTokens)");
        }
        _ctx.MakeCurrent();
        if (_batched.Length < segments.Length) _batched = new bool[Math.Max(segments.Length, 2 * _batched.Length)];
        var batched = _batched.AsSpan(0, segments.Length);
        _rows.Plan(BatchedDecodeRows ? segments : default, _kernels, batched);
        _step.CopyFrom(_stepHost.AsSpan(0, 2 * n + wanted));
        ulong ids = _step.Pointer, pos = ids + (ulong)(4L * n), rows = pos + (ulong)(4L * n);
        _kernels.Embed(_w.Embedding.Buffer, _f16, ids, n, c.Dim, _x.Pointer);
        foreach (var s in segments) s.Kv.BeginChunk(tokens.Slice(s.Start, s.Count));
        try
        {
            if (_rows.Count > 0) _rows.Begin(tokens, segments, batched);
            Layers(n, null, 0, segments, pos);
            if (_rows.Count > 0) _rows.End();
        }
        finally
        {
            _rows.Forget();   // after a failed step: no sequence of it is held here (the caller fails them)
        }
        foreach (var s in segments) s.Kv.Commit(s.Count);
        if (wanted == 0) return;
        _kernels.RmsNormGather(_x.Pointer, rows, wanted, _w.OutputNorm, c.Dim, c.NormEps, _f16 ? 0 : _xn.Pointer, _f16 ? _xh.Pointer : 0);
        _w.Output.Apply(_blas, _f16 ? _xh.Pointer : _xn.Pointer, _logits.Pointer, wanted);
        _logits.CopyTo(logits[..(wanted * c.VocabSize)]);
    }

    /// <summary>The layers over the n rows in _x: for one sequence <paramref name="one"/> at positions pos0.. (the
    /// chunk path), else for <paramref name="segments"/>, row t at position pos[t] (device ints). With
    /// <paramref name="graph"/>, a one-token step recorded into a decode graph (positions from its device ints).</summary>
    private void Layers(int n, IDeviceKvSequence? one, long pos0, ReadOnlySpan<BatchSegment> segments, ulong pos, GraphStep? graph = null)
    {
        var c = Config;
        ulong xin = _f16 ? _xh.Pointer : _xn.Pointer;
        ulong kvRow = (ulong)c.KvDim * 4, qRow = (ulong)c.QDim * 4;
        ulong y = _f16 ? 0 : _xn.Pointer, yh = _f16 ? _xh.Pointer : 0;
        // One row: q, k, v side by side from one stacked product, gate and up alike (two launches a layer instead of five).
        bool stacked = n == 1;
        ulong q = _qkv.Pointer, k = q + (stacked ? 1UL : (ulong)MaxBatch) * qRow, v = k + (stacked ? 1UL : (ulong)MaxBatch) * kvRow;
        ulong gate = _gateUp.Pointer, up = gate + (stacked ? 1UL : (ulong)MaxBatch) * (ulong)c.FfnDim * 4;
        // One row with f16 weights: each product also makes its input (norm, SwiGLU) or adds into the residual stream
        // (gemv_f16), so _x is whole after every product. Not with offload speculation (it reads the normalised input).
        bool fused = stacked && Fused && one is not Offload.ISpeculativeKvSequence { Speculates: true };
        int sms = _ctx.Device.Multiprocessors;
        for (int l = 0; l < c.Layers; l++)
        {
            var w = _w.Layers[l];
            // Attention block. The previous layer's residual add (its down projection in _proj) goes with this norm:
            // one launch, the same values (model.cu add_rmsnorm_rows).
            if (fused) _kernels.Gemv(w.Qkv, GemvInput.Norm, _x.Pointer, 0, w.AttnNorm, c.NormEps, q, residual: false, sms);
            else
            {
                if (l == 0) _kernels.RmsNorm(_x.Pointer, w.AttnNorm, n, c.Dim, c.NormEps, y, yh);
                else _kernels.AddRmsNorm(_x.Pointer, _proj.Pointer, w.AttnNorm, n, c.Dim, c.NormEps, y, yh);
                if (stacked) w.Qkv.Apply(_blas, xin, q, 1);
                else
                {
                    w.Wq.Apply(_blas, xin, q, n);
                    w.Wk.Apply(_blas, xin, k, n);
                    w.Wv.Apply(_blas, xin, v, n);
                }
            }
            if (w.Bq != null) _kernels.AddBias(q, w.Bq, c.QDim, (long)n * c.QDim);
            if (w.Bk != null) _kernels.AddBias(k, w.Bk, c.KvDim, (long)n * c.KvDim);
            if (w.Bv != null) _kernels.AddBias(v, w.Bv, c.KvDim, (long)n * c.KvDim);
            bool attF16 = false;   // the attention wrote its f16 copy itself (graph steps)
            if (graph is { } g)
            {
                // The query's RoPE rides in the append, the f16 copy of the output in the merge: the direct path below
                // launches both on their own and stays the reference (DecodeGraphGpuTests compare the two).
                g.Sequence.AppendStep(l, q, k, v, g.At);
                g.Sequence.AttendStep(l, q, _att.Pointer, _f16 ? _atth.Pointer : 0, g.Split, g.At);
                attF16 = _f16;
            }
            else if (one != null)
            {
                _kernels.Rope(q, n, c.Heads, _rope, pos0);
                if (n == 1 && l + 1 < c.Layers && one is Offload.ISpeculativeKvSequence { Speculates: true } spec)
                {
                    // Layer l+1's query from layer l's normalised input (InfiniGen: the residual stream changes little
                    // between layers), so an offloaded cache can start copying its blocks while layer l computes.
                    var next = _w.Layers[l + 1];
                    next.Wq.Apply(_blas, xin, _qs.Pointer, 1);
                    if (next.Bq != null) _kernels.AddBias(_qs.Pointer, next.Bq, c.QDim, c.QDim);
                    _kernels.Rope(_qs.Pointer, 1, c.Heads, _rope, pos0);
                    spec.Speculate(l + 1, _qs.Pointer);
                }
                one.AppendDevice(l, k, v, n);
                one.AttendDevice(l, q, n, _att.Pointer);
            }
            else
            {
                _kernels.RopeAt(q, n, c.Heads, _rope, pos);
                if (_rows.Count > 0)
                {
                    _rows.Append(l, k, v);
                    _rows.Attend(l, q, _att.Pointer, 0);
                }
                for (int i = 0; i < segments.Length; i++)
                {
                    if (_rows.Count > 0 && _batched[i]) continue;
                    var s = segments[i];
                    var kv = (CudaKvSequence)s.Kv;
                    ulong at = (ulong)s.Start;
                    kv.AppendDevice(l, k + at * kvRow, v + at * kvRow, s.Count);
                    kv.AttendDevice(l, q + at * qRow, s.Count, _att.Pointer + at * qRow);
                }
            }
            if (_f16 && !attF16) _kernels.ToF16(_att.Pointer, _atth.Pointer, (long)n * c.QDim);
            if (fused)
            {
                // Feed-forward block: the output projection adds into _x, the gate/up product normalises _x itself,
                // the down projection makes SwiGLU of gate and up and adds into _x.
                _kernels.Gemv(w.Wo, GemvInput.F16, _atth.Pointer, 0, null, 0, _x.Pointer, residual: true, sms);
                _kernels.Gemv(w.GateUp, GemvInput.Norm, _x.Pointer, 0, w.FfnNorm, c.NormEps, gate, residual: false, sms);
                _kernels.Gemv(w.WDown, GemvInput.SwiGlu, gate, up, null, 0, _x.Pointer, residual: true, sms);
                continue;
            }
            w.Wo.Apply(_blas, _f16 ? _atth.Pointer : _att.Pointer, _proj.Pointer, n);
            // Feed-forward block (SwiGLU), its norm fused with the attention block's residual add.
            _kernels.AddRmsNorm(_x.Pointer, _proj.Pointer, w.FfnNorm, n, c.Dim, c.NormEps, y, yh);
            if (stacked) w.GateUp.Apply(_blas, xin, gate, 1);
            else
            {
                w.WGate.Apply(_blas, xin, gate, n);
                w.WUp.Apply(_blas, xin, up, n);
            }
            if (_f16) _kernels.SwiGluF16(gate, up, _gateh.Pointer, (long)n * c.FfnDim);
            else _kernels.SwiGlu(gate, up, (long)n * c.FfnDim);
            w.WDown.Apply(_blas, _f16 ? _gateh.Pointer : gate, _proj.Pointer, n);
            // The last residual add: the next layer's norm takes the others.
            if (l + 1 == c.Layers) _kernels.Add(_x.Pointer, _proj.Pointer, (long)n * c.Dim);
        }
    }

    /// <summary>The final norm and the logits of the one row at <paramref name="x"/> into _logits: one gemv_f16 launch
    /// when the steps are fused, else RMSNorm and cuBLAS.</summary>
    private void OutputRow(ulong x)
    {
        var c = Config;
        if (Fused && _w.Output.Type == CudaWeightType.F16)
        {
            _kernels.Gemv(_w.Output, GemvInput.Norm, x, 0, _w.OutputNorm, c.NormEps, _logits.Pointer, residual: false, _ctx.Device.Multiprocessors);
            return;
        }
        _kernels.RmsNorm(x, _w.OutputNorm, 1, c.Dim, c.NormEps, _f16 ? 0 : _xn.Pointer, _f16 ? _xh.Pointer : 0);
        _w.Output.Apply(_blas, _f16 ? _xh.Pointer : _xn.Pointer, _logits.Pointer, 1);
    }

    /// <summary>Final norm and output projection for chunk rows [first, first+count), copied to the host.</summary>
    protected override void Logits(int first, int count, Span<float> logits)
    {
        var c = Config;
        if (_graphLogits)
        {
            _graphLogits = false;
            if (first != 0 || count != 1) throw new InvalidOperationException($"logits rows {first}..{first + count} of a one-token step");
            _logits.CopyTo(logits[..c.VocabSize]);
            return;
        }
        ulong x = _x.Pointer + (ulong)((long)first * c.Dim * 4);
        if (count == 1) OutputRow(x);
        else
        {
            _kernels.RmsNorm(x, _w.OutputNorm, count, c.Dim, c.NormEps, _f16 ? 0 : _xn.Pointer, _f16 ? _xh.Pointer : 0);
            _w.Output.Apply(_blas, _f16 ? _xh.Pointer : _xn.Pointer, _logits.Pointer, count);
        }
        _logits.CopyTo(logits[..(count * c.VocabSize)]);
    }

    public void Dispose()
    {
        _graph?.Dispose();
        _rows?.Dispose();
        foreach (var b in new[] { _step, _ids, _x, _xn, _xh, _qkv, _att, _atth, _proj, _gateUp, _gateh, _logits, _qs, _decodeStep, _blasWorkspace }) b?.Dispose();
        _w?.Dispose();
        _contiguousKernels?.Dispose();
        _shardKernels?.Dispose();
        (Sharding?.Exchange as IDisposable)?.Dispose();
        _blas.Dispose();
        _kernels.Dispose();
        _ctx.Dispose();
    }
}
