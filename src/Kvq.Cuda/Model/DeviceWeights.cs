using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>One layer's weights on the device.</summary>
internal sealed class DeviceLayer : IDisposable
{
    public required DeviceBuffer AttnNorm { get; init; }
    public required DeviceMatrix Wq { get; init; }
    public required DeviceMatrix Wk { get; init; }
    public required DeviceMatrix Wv { get; init; }
    public required DeviceMatrix Wo { get; init; }
    public DeviceBuffer? Bq { get; init; }
    public DeviceBuffer? Bk { get; init; }
    public DeviceBuffer? Bv { get; init; }
    public required DeviceBuffer FfnNorm { get; init; }
    public required DeviceMatrix WGate { get; init; }
    public required DeviceMatrix WUp { get; init; }
    public required DeviceMatrix WDown { get; init; }

    public long Bytes => AttnNorm.Bytes + FfnNorm.Bytes + Wq.Bytes + Wk.Bytes + Wv.Bytes + Wo.Bytes + WGate.Bytes + WUp.Bytes + WDown.Bytes
                         + (Bq?.Bytes ?? 0) + (Bk?.Bytes ?? 0) + (Bv?.Bytes ?? 0);

    public void Dispose()
    {
        foreach (var d in new IDisposable?[] { AttnNorm, Wq, Wk, Wv, Wo, Bq, Bk, Bv, FfnNorm, WGate, WUp, WDown }) d?.Dispose();
    }
}

/// <summary>All of a model's weights on the device: matrices in f16 or f32, norms and biases in f32; a tied output
/// matrix is the embedding itself.</summary>
internal sealed class DeviceWeights : IDisposable
{
    private readonly List<IDisposable> _owned = new();
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
                Layers[l] = Own(new DeviceLayer
                {
                    AttnNorm = ctx.Upload<float>(s.AttnNorm),
                    Wq = new DeviceMatrix(ctx, s.Wq, type),
                    Wk = new DeviceMatrix(ctx, s.Wk, type),
                    Wv = new DeviceMatrix(ctx, s.Wv, type),
                    Wo = new DeviceMatrix(ctx, s.Wo, type),
                    Bq = s.Bq == null ? null : ctx.Upload<float>(s.Bq),
                    Bk = s.Bk == null ? null : ctx.Upload<float>(s.Bk),
                    Bv = s.Bv == null ? null : ctx.Upload<float>(s.Bv),
                    FfnNorm = ctx.Upload<float>(s.FfnNorm),
                    WGate = new DeviceMatrix(ctx, s.WGate, type),
                    WUp = new DeviceMatrix(ctx, s.WUp, type),
                    WDown = new DeviceMatrix(ctx, s.WDown, type),
                });
                progress?.Invoke(l + 1, Layers.Length);
            }
            OutputNorm = Own(ctx.Upload<float>(w.OutputNorm));
            Output = w.TiedOutput ? Embedding : Own(new DeviceMatrix(ctx, w.Output, type));
        }
        catch
        {
            Dispose();   // a half-uploaded model gives back what it took
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
