namespace Kvq.Cuda.Attention;

/// <summary>The compiled decode-attention and KV-append modules for one context (NVRTC, cached on disk):
/// decode_attention.cu (nuq version <see cref="NuqVersion"/>, the f16 kernels, the reduce) and kv_encode.cu.</summary>
public sealed class DecodeKernels : ISplitKernels, IDisposable
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

    /// <summary>The nuq decode kernel version production runs, the only one decode_attention.cu compiles (the kernel
    /// lab keeps the others: dev/kernels/README.md lists what each changed). Not the highest: v10-v12 were no faster
    /// on an H100 (docs/perf.md, runs 25 and 29).</summary>
    public const int NuqVersion = 9;

    /// <summary>Key (= value) bits of the nuq kernels decode_attention.cu compiles.</summary>
    public static readonly IReadOnlyList<int> NuqBits = [2, 3, 4];

    /// <summary>Query heads per KV head that decode_attention.cu compiles, for the f16 and the nuq kernels.</summary>
    public static readonly IReadOnlyList<int> Groups = [1, 4];

    int ISplitKernels.Version => NuqVersion;

    /// <summary>The decode kernel for a cache: f16 (<paramref name="keyBits"/> 16) or nuq in one of the three layouts.</summary>
    public CudaKernel Attention(int keyBits, int valueBits, int group, NuqLayout layout = NuqLayout.Slots) =>
        _attn.Kernel(AttentionName(keyBits, valueBits, group, layout));

    /// <summary>The entry name of a decode kernel in decode_attention.cu; what it does not compile throws.</summary>
    public static string AttentionName(int keyBits, int valueBits, int group, NuqLayout layout = NuqLayout.Slots)
    {
        if (!Groups.Contains(group))
            throw new NotSupportedException($"decode_attention.cu is compiled for {string.Join(" or ", Groups)} query heads per KV head (asked: {group})");
        if (keyBits == 16 && valueBits == 16) return $"attn_f16_g{group}";
        if (keyBits != valueBits || !NuqBits.Contains(keyBits))
            throw new NotSupportedException($"decode_attention.cu holds f16 and nuq{string.Join("/", NuqBits)} kernels with equal key and value bits (asked: keys {keyBits}, values {valueBits})");
        return $"attn_nuq_k{keyBits}_v{valueBits}_g{group}_r{NuqVersion}{LayoutSuffix(layout)}";
    }

    /// <summary>The kernel name suffix of a nuq layout (decode_attention.cu NUQ_V7_LAYOUTS).</summary>
    public static string LayoutSuffix(NuqLayout layout) => layout switch
    {
        NuqLayout.Slots => "",
        NuqLayout.Dense => "_dense",
        NuqLayout.SparseKeys => "_sparse",
        _ => throw new ArgumentOutOfRangeException(nameof(layout), layout, "no such nuq layout"),
    };

    public CudaKernel Reduce() => _attn.Kernel("attn_reduce");
    public CudaKernel EncodeKeys(int bits, bool dense = false) => _encode.Kernel($"encode_keys_b{bits}{Suffix(dense)}");
    public CudaKernel EncodeValues(int bits, bool dense = false) => _encode.Kernel($"encode_values_b{bits}{Suffix(dense)}");
    public CudaKernel AppendKeys(int bits, bool dense = false) => _encode.Kernel($"append_keys_b{bits}{Suffix(dense)}");
    public CudaKernel AppendValues(int bits, bool dense = false) => _encode.Kernel($"append_values_b{bits}{Suffix(dense)}");
    /// <summary>The append kernels over the model's rows [token][KV head][head dim] (a prefill chunk in one launch).</summary>
    public CudaKernel AppendRowKeys(int bits, bool dense = false) => _encode.Kernel($"append_rows_keys_b{bits}{Suffix(dense)}");
    public CudaKernel AppendRowValues(int bits, bool dense = false) => _encode.Kernel($"append_rows_values_b{bits}{Suffix(dense)}");
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
