namespace Kvq.Tensors;

/// <summary>Tensor element types as numbered by ggml/GGUF. Only the ones Kvq reads are listed by name.</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ4_NL = 20, IQ4_XS = 23, BF16 = 30,
}

/// <summary>Block geometry of each type: values per block and bytes per block (ggml's type traits).</summary>
public static class GgmlTypeInfo
{
    public static bool IsSupported(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0
            or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.IQ4_NL
            or GgmlType.IQ4_XS => true,
        _ => false,
    };

    /// <summary>Values per block.</summary>
    public static int BlockSize(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 1,
        GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.Q8_1 or GgmlType.IQ4_NL => 32,
        GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q8_K or GgmlType.IQ4_XS => 256,
        _ => throw new NotSupportedException($"ggml type {(uint)t} is not supported"),
    };

    /// <summary>Bytes per block.</summary>
    public static int TypeSize(GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        GgmlType.Q4_0 => 18,
        GgmlType.Q4_1 => 20,
        GgmlType.Q5_0 => 22,
        GgmlType.Q5_1 => 24,
        GgmlType.Q8_0 => 34,
        GgmlType.Q8_1 => 36,
        GgmlType.Q2_K => 84,
        GgmlType.Q3_K => 110,
        GgmlType.Q4_K => 144,
        GgmlType.Q5_K => 176,
        GgmlType.Q6_K => 210,
        GgmlType.Q8_K => 292,
        GgmlType.IQ4_NL => 18,
        GgmlType.IQ4_XS => 136,
        _ => throw new NotSupportedException($"ggml type {(uint)t} is not supported"),
    };

    /// <summary>Bytes taken by one row of <paramref name="n"/> values; n must be a multiple of the block size.</summary>
    public static long RowBytes(GgmlType t, long n) => n / BlockSize(t) * TypeSize(t);
}
