using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>One layer's weights on the device. The q, k and v projections are rows of one stacked matrix
/// (<see cref="Qkv"/>), as are gate and up (<see cref="GateUp"/>): a one-token step applies each stack once.</summary>
internal sealed class DeviceLayer : IDisposable
{
    public required DeviceBuffer AttnNorm { get; init; }
    /// <summary>Wq, Wk and Wv stacked by rows: y = [q | k | v] for one input row.</summary>
    public required DeviceMatrix Qkv { get; init; }
    public required DeviceMatrix Wo { get; init; }
    public DeviceBuffer? Bq { get; init; }
    public DeviceBuffer? Bk { get; init; }
    public DeviceBuffer? Bv { get; init; }
    public required DeviceBuffer FfnNorm { get; init; }
    /// <summary>WGate and WUp stacked by rows: y = [gate | up] for one input row.</summary>
    public required DeviceMatrix GateUp { get; init; }
    public required DeviceMatrix WDown { get; init; }

    private DeviceMatrix? _wq, _wk, _wv, _wGate, _wUp;
    public DeviceMatrix Wq => _wq ??= Qkv.Slice(0, QDim);
    public DeviceMatrix Wk => _wk ??= Qkv.Slice(QDim, KvDim);
    public DeviceMatrix Wv => _wv ??= Qkv.Slice(QDim + KvDim, KvDim);
    public DeviceMatrix WGate => _wGate ??= GateUp.Slice(0, GateUp.Rows / 2);
    public DeviceMatrix WUp => _wUp ??= GateUp.Slice(GateUp.Rows / 2, GateUp.Rows / 2);
    public required int QDim { get; init; }
    public required int KvDim { get; init; }

    public long Bytes => AttnNorm.Bytes + FfnNorm.Bytes + Qkv.Bytes + Wo.Bytes + GateUp.Bytes + WDown.Bytes
                         + (Bq?.Bytes ?? 0) + (Bk?.Bytes ?? 0) + (Bv?.Bytes ?? 0);

    public void Dispose()
    {
        foreach (var d in new IDisposable?[] { AttnNorm, Qkv, Wo, Bq, Bk, Bv, FfnNorm, GateUp, WDown }) d?.Dispose();
    }
}

/// <summary>All of a model's weights on the device: matrices in f16 or f32, norms and biases in f32; a tied output
/// matrix is the embedding itself.</summary>
internal sealed class DeviceWeights : IDisposable
{
    private readonly List<IDisposable> _owned = new();   // a layer's matrices are owned by its DeviceLayer or, for random weights, listed here
    public DeviceMatrix Embedding { get; }
    public DeviceLayer[] Layers { get; }
    public DeviceBuffer OutputNorm { get; }
    public DeviceMatrix Output { get; }

    public DeviceWeights(CudaContext ctx, ModelWeights w, CudaWeightType type, Action<int, int>? progress = null)
    {
        try
        {
            Embedding = Own(new DeviceMatrix(ctx, w.TokenEmbedding, type));
            Layers = new DeviceLayer[w.Layers.Length];
            for (int l = 0; l < Layers.Length; l++)
            {
                var s = w.Layers[l];
                var (gate, up, down) = s.DenseFfn("the CUDA backend");
                Layers[l] = Own(new DeviceLayer
                {
                    AttnNorm = ctx.Upload(s.AttnNorm),
                    Qkv = DeviceMatrix.Stack(ctx, type, s.Wq, s.Wk, s.Wv),
                    QDim = s.Wq.Rows,
                    KvDim = s.Wk.Rows,
                    Wo = new DeviceMatrix(ctx, s.Wo, type),
                    Bq = s.Bq == null ? null : ctx.Upload(s.Bq),
                    Bk = s.Bk == null ? null : ctx.Upload(s.Bk),
                    Bv = s.Bv == null ? null : ctx.Upload(s.Bv),
                    FfnNorm = ctx.Upload(s.FfnNorm),
                    GateUp = DeviceMatrix.Stack(ctx, type, gate, up),
                    WDown = new DeviceMatrix(ctx, down, type),
                });
                progress?.Invoke(l + 1, Layers.Length);
            }
            OutputNorm = Own(ctx.Upload(w.OutputNorm));
            Output = w.TiedOutput ? Embedding : Own(new DeviceMatrix(ctx, w.Output, type));
        }
        catch
        {
            Dispose();   // a half-uploaded model gives back what it took
            throw;
        }
    }

    private DeviceWeights(DeviceMatrix embedding, DeviceLayer[] layers, DeviceBuffer outputNorm, DeviceMatrix output, List<IDisposable> owned)
    {
        Embedding = embedding;
        Layers = layers;
        OutputNorm = outputNorm;
        Output = output;
        _owned = owned;
    }

    /// <summary>Random weights of a shape, made on the device (see CudaTransformer.CreateRandom).</summary>
    public static DeviceWeights Random(CudaContext ctx, ModelKernels kernels, ModelConfig c, CudaWeightType type, uint seed)
    {
        var owned = new List<IDisposable>();
        uint next = seed;
        DeviceMatrix M(int rows, int cols, float scale)
        {
            var m = new DeviceMatrix(ctx, rows, cols, type);
            owned.Add(m);
            kernels.FillRandom(m.Buffer.Pointer, (long)rows * cols, type == CudaWeightType.F16, next++ * 0x9E3779B9u, scale);
            return m;
        }
        DeviceBuffer Ones(int n)
        {
            var b = ctx.Upload(Enumerable.Repeat(1f, n).ToArray());
            owned.Add(b);
            return b;
        }
        try
        {
            var emb = M(c.VocabSize, c.Dim, 1f);
            var layers = new DeviceLayer[c.Layers];
            for (int l = 0; l < c.Layers; l++)
            {
                float sd = 1f / MathF.Sqrt(c.Dim), sf = 1f / MathF.Sqrt(c.FfnDim), sq = 1f / MathF.Sqrt(c.QDim);
                layers[l] = new DeviceLayer
                {
                    AttnNorm = Ones(c.Dim), Qkv = M(c.QDim + 2 * c.KvDim, c.Dim, sd), QDim = c.QDim, KvDim = c.KvDim, Wo = M(c.Dim, c.QDim, sq),
                    FfnNorm = Ones(c.Dim), GateUp = M(2 * c.FfnDim, c.Dim, sd), WDown = M(c.Dim, c.FfnDim, sf),
                };
            }
            var outNorm = Ones(c.Dim);
            var output = M(c.VocabSize, c.Dim, 1f / MathF.Sqrt(c.Dim));
            return new DeviceWeights(emb, layers, outNorm, output, owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    private T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    public long Bytes => Embedding.Bytes + Layers.Sum(l => l.Bytes) + OutputNorm.Bytes + (ReferenceEquals(Output, Embedding) ? 0 : Output.Bytes);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
    }
}
