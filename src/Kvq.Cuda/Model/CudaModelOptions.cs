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
/// <param name="NuqPrefill">How a prefill chunk attends over a KVQuant cache with tensor-core prefill
/// (<see cref="Model.NuqPrefill"/>); null: the KVQ_NUQ_PREFILL environment variable (tiles, f16, decoded), decoded when
/// it is unset (<see cref="NuqPrefillSwitch.Resolve"/>: measured in run 46).</param>
/// <param name="FusedDecodeProducts">One-row steps with f16 weights run each product as one gemv_f16 launch with its
/// norm, SwiGLU or residual add (<see cref="CudaTransformer.FusedDecodeProducts"/>); null: the KVQ_FUSED_PRODUCTS
/// environment variable (1 on, 0 off), on when it is unset.</param>
public sealed record CudaModelOptions(CudaWeightType Weights = CudaWeightType.F16, int DeviceOrdinal = 0, int MaxBatch = 64, bool ContiguousNuq = true,
    bool TensorCorePrefill = true, bool? DecodeGraphs = null, NuqPrefill? NuqPrefill = null, bool? FusedDecodeProducts = null)
{
    public static CudaWeightType ParseWeights(string s) => s.Trim().ToLowerInvariant() switch
    {
        "f16" => CudaWeightType.F16,
        "f32" => CudaWeightType.F32,
        _ => throw new ArgumentException($"device weight type '{s}': expected f16 or f32"),
    };
}

/// <summary>
/// How a prefill chunk (more than one query token) attends over a KVQuant cache when prefill runs on tensor cores
/// (issue 19: KVQuant prefill at f16 speed). With f32 tiles (f32 weights) every mode takes <see cref="Tiles"/>.
/// </summary>
public enum NuqPrefill
{
    /// <summary>The reference: the chunk is encoded (the contiguous layout: token by token), then the tensor-core kernel
    /// decodes and rotates every key and value tile inside attention, once per block of 64 query rows.</summary>
    Tiles,
    /// <summary>The chunk is encoded in one launch per side; the past (codes) is decoded once per chunk and layer into an
    /// f16 scratch laid out as the f16 cache (<see cref="PrefillScratch"/>), the chunk's own keys and values go there
    /// in f16 as the f16 cache stores them, and the f16 tensor-core kernel attends over both: the chunk sees itself
    /// unquantized (as an f16 cache would), the past as the codes decode.</summary>
    F16Chunk,
    /// <summary>As <see cref="F16Chunk"/>, but the chunk is encoded first and decoded with the past, so attention sees
    /// what <see cref="Tiles"/> sees (the same f16 tiles): the check of the decode-once path, and the choice where a
    /// chunk must see its own quantization.</summary>
    Decoded,
}

/// <summary>The KVQ_NUQ_PREFILL switch: option, environment variable, default.</summary>
public static class NuqPrefillSwitch
{
    public const string EnvVar = "KVQ_NUQ_PREFILL";

    /// <summary>The option when given, else the environment variable's value (<see cref="Parse"/>), else
    /// <see cref="NuqPrefill.Decoded"/>: run 45 (H100, 7B shape, 32k tokens) measured it at 0.91x (nuq4-1%) and 0.94x
    /// (nuq2-1%) of f16 prefill against the tiles' 0.34-0.40x, with attention outputs equal to the tiles' bit for bit;
    /// <see cref="NuqPrefill.F16Chunk"/> is as fast but lets a chunk see itself unquantized, unlike the CPU cache.</summary>
    public static NuqPrefill Resolve(NuqPrefill? option, string? env) =>
        option ?? (string.IsNullOrWhiteSpace(env) ? NuqPrefill.Decoded : Parse(env, EnvVar));

    /// <summary>tiles, f16 or decoded (any case; "old" = tiles, "new" = f16); anything else is an error naming
    /// <paramref name="where"/> and the value.</summary>
    public static NuqPrefill Parse(string s, string where = "KVQuant prefill mode") => s.Trim().ToLowerInvariant() switch
    {
        "tiles" or "old" => NuqPrefill.Tiles,
        "f16" or "new" => NuqPrefill.F16Chunk,
        "decoded" => NuqPrefill.Decoded,
        _ => throw new ArgumentException($"{where}: '{s}' is not a KVQuant prefill mode (expected tiles, f16 or decoded)"),
    };

    /// <summary>The short name <see cref="Parse"/> reads back.</summary>
    public static string Name(NuqPrefill mode) => mode switch
    {
        NuqPrefill.Tiles => "tiles",
        NuqPrefill.F16Chunk => "f16",
        NuqPrefill.Decoded => "decoded",
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "no such KVQuant prefill mode"),
    };
}

/// <summary>An on/off switch of the CUDA model: the option when set, else its environment variable (1/on/true,
/// 0/off/false; anything else is an error naming the variable), else on.</summary>
internal static class OnOffSwitch
{
    public static bool Resolve(bool? option, string envVar, string? env)
    {
        if (option is { } o) return o;
        return env?.Trim().ToLowerInvariant() switch
        {
            null or "" => true,
            "1" or "on" or "true" => true,
            "0" or "off" or "false" => false,
            _ => throw new ArgumentException($"{envVar}='{env}': expected 1 (on) or 0 (off)"),
        };
    }
}
