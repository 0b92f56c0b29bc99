namespace Kvq.Cuda.Offload;

/// <summary>A device sequence that takes a prediction of a layer's query before the layer runs (the CUDA model computes
/// layer l+1's query from layer l's input while at layer l: <see cref="Model.CudaTransformer"/>).</summary>
internal interface ISpeculativeKvSequence
{
    bool Speculates { get; }

    /// <summary>Layer <paramref name="layer"/>'s predicted query (f32 [Q dim], post-RoPE) for the coming decode step.</summary>
    void Speculate(int layer, ulong q);
}
