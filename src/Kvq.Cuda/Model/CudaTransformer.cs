using Kvq.Cache;
using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>
/// A Llama-family decoder whose weights, activations and KV cache live on a CUDA device. (Being written: see
/// issue 8.)
/// </summary>
public sealed class CudaTransformer : ILanguageModel, IDisposable
{
    public ModelConfig Config { get; }
    public KvShape KvShape => KvShape.For(Config);
    public string Device => "cuda";
    public int Threads => 1;

    private CudaTransformer(ModelConfig config) => Config = config;

    /// <summary>Uploads <paramref name="weights"/> to the device. Throws <see cref="CudaUnavailableException"/>
    /// where there is no CUDA driver or device.</summary>
    public static CudaTransformer Load(ModelWeights weights, CudaModelOptions? options = null)
    {
        using var probe = CudaContext.Create((options ?? new()).DeviceOrdinal);
        throw new NotSupportedException("the CUDA model is not written yet");
    }

    public void Forward(ReadOnlySpan<int> tokens, IKvSequence kv, Span<float> lastLogits, Span<float> allLogits = default) =>
        throw new NotSupportedException("the CUDA model is not written yet");

    public IKvSequence CreateSequence(KvCacheConfig config, int maxTokens) =>
        throw new NotSupportedException("the CUDA model is not written yet");

    public void Dispose() { }
}
