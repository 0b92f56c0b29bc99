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

    /// <summary>Latest version of the nuq decode kernel (decode_attention.cu lists what each one changed).</summary>
    public const int LatestVersion = 6;

    public CudaKernel Attention(int keyBits, int valueBits, int group, int version = LatestVersion) => keyBits == 16
        ? _attn.Kernel($"attn_f16_g{group}")
        : _attn.Kernel($"attn_nuq_k{keyBits}_v{valueBits}_g{group}_r{version}");

    public CudaKernel Reduce() => _attn.Kernel("attn_reduce");
    public CudaKernel EncodeKeys(int bits) => _encode.Kernel($"encode_keys_b{bits}");
    public CudaKernel EncodeValues(int bits) => _encode.Kernel($"encode_values_b{bits}");
    public CudaKernel AppendKeys(int bits) => _encode.Kernel($"append_keys_b{bits}");
    public CudaKernel AppendValues(int bits) => _encode.Kernel($"append_values_b{bits}");
    public CudaKernel Materialize() => _encode.Kernel("kv_materialize");
    public CudaKernel WriteF16() => _encode.Kernel("kv_write_f16");

    public void Dispose()
    {
        _attn.Dispose();
        _encode.Dispose();
    }
}
