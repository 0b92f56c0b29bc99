namespace Kvq.Cuda.Attention;

/// <summary>The compiled decode-attention and KV-append modules for one context (NVRTC, cached on disk).</summary>
public sealed class DecodeKernels : IDisposable
{
    private readonly CudaModule _attn, _encode;
    public CudaContext Context { get; }
    public KernelLoader Loader { get; }

    public DecodeKernels(CudaContext ctx, KernelLoader? loader = null)
    {
        Context = ctx;
        Loader = loader ?? new KernelLoader(ctx);
        _attn = Loader.Load(KernelSources.Read("decode_attention.cu"), "decode_attention.cu");
        _encode = Loader.Load(KernelSources.Read("kv_encode.cu"), "kv_encode.cu");
    }

    /// <summary>The production version of the nuq decode kernel (decode_attention.cu lists what each one changed). Not
    /// the highest: v11 and v12 (the GQA group on tensor cores) were no faster on an H100 (docs/perf.md, run 29).</summary>
    public const int LatestVersion = 9;

    /// <summary>The decode kernel for a cache; the dense and sparse nuq layouts are compiled for v6 to v12.</summary>
    public CudaKernel Attention(int keyBits, int valueBits, int group, int version = LatestVersion, NuqLayout layout = NuqLayout.Slots) =>
        _attn.Kernel(AttentionName(keyBits, valueBits, group, version, layout));

    /// <summary>The entry name of a decode kernel in decode_attention.cu.</summary>
    public static string AttentionName(int keyBits, int valueBits, int group, int version = LatestVersion, NuqLayout layout = NuqLayout.Slots)
    {
        if (keyBits == 16) return $"attn_f16_g{group}";
        if (layout != NuqLayout.Slots && version < 6)
            throw new NotSupportedException($"the {layout} nuq layout is compiled for kernel versions 6 and up only (asked: v{version})");
        var suffix = layout switch { NuqLayout.Dense => "_dense", NuqLayout.SparseKeys => "_sparse", _ => "" };
        // v11 and v12 change only the GQA path (G > 1); for MHA they are v9, compiled once under v9's name.
        if (version >= 11 && group == 1) version = 9;
        return $"attn_nuq_k{keyBits}_v{valueBits}_g{group}_r{version}{suffix}";
    }

    public CudaKernel Reduce() => _attn.Kernel("attn_reduce");
    public CudaKernel EncodeKeys(int bits, bool dense = false) => _encode.Kernel($"encode_keys_b{bits}{Suffix(dense)}");
    public CudaKernel EncodeValues(int bits, bool dense = false) => _encode.Kernel($"encode_values_b{bits}{Suffix(dense)}");
    public CudaKernel AppendKeys(int bits, bool dense = false) => _encode.Kernel($"append_keys_b{bits}{Suffix(dense)}");
    public CudaKernel AppendValues(int bits, bool dense = false) => _encode.Kernel($"append_values_b{bits}{Suffix(dense)}");
    private static string Suffix(bool dense) => dense ? "_dense" : "";
    /// <summary>The sparse layout's per-chunk key outlier records (2 outliers per token at most, like nuqB-0.1%).</summary>
    public CudaKernel EncodeKeyList() => _encode.Kernel("encode_key_list_s2");
    public CudaKernel AppendKeyList() => _encode.Kernel("append_key_list_s2");
    public CudaKernel Materialize() => _encode.Kernel("kv_materialize");
    public CudaKernel WriteF16() => _encode.Kernel("kv_write_f16");

    public void Dispose()
    {
        _attn.Dispose();
        _encode.Dispose();
    }
}
