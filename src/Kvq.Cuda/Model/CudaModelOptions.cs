namespace Kvq.Cuda.Model;

/// <summary>How weights are held on the device: f16 (half the memory; activations are rounded to f16 for the
/// products, f32 accumulation) or f32 (exact products, to compare with the CPU).</summary>
public enum CudaWeightType { F16, F32 }

/// <summary>Options of a model on a CUDA device.</summary>
/// <param name="Weights">Storage of the weight matrices on the device.</param>
/// <param name="DeviceOrdinal">Which device.</param>
/// <param name="MaxBatch">Tokens per forward chunk (prefill runs in chunks of this many).</param>
/// <param name="ContiguousNuq">KVQuant caches in the contiguous decode layout (NuqLayerCache, one per sequence and
/// layer) read by the split-K decode kernels (decode_attention.cu, version 9: head dim 128, 1 or 4 query heads per KV
/// head, nuqB-1% or dense nuqB, sink 0 or 1) where they apply; false keeps every KVQuant cache in the model's own
/// layout (model.cu), for comparisons.</param>
/// <param name="TensorCorePrefill">With f16 weights, prefill attention on tensor cores (f16 products; model.cu
/// attn_mma); f32 weights always take the f32 tiles (exact to f32 rounding, for comparing with the CPU).</param>
/// <param name="DecodeGraphs">Single-token decode steps replayed from a CUDA graph (<see cref="CudaTransformer.DecodeGraphs"/>);
/// null: the KVQ_CUDA_GRAPHS environment variable (1 on, 0 off), on when it is unset.</param>
public sealed record CudaModelOptions(CudaWeightType Weights = CudaWeightType.F16, int DeviceOrdinal = 0, int MaxBatch = 64, bool ContiguousNuq = true,
    bool TensorCorePrefill = true, bool? DecodeGraphs = null)
{
    public static CudaWeightType ParseWeights(string s) => s.Trim().ToLowerInvariant() switch
    {
        "f16" => CudaWeightType.F16,
        "f32" => CudaWeightType.F32,
        _ => throw new ArgumentException($"device weight type '{s}': expected f16 or f32"),
    };
}
