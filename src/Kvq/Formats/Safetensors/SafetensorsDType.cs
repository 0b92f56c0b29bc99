using Kvq.Tensors;

namespace Kvq.Formats.Safetensors;

/// <summary>The dtype names of the safetensors format; F32, F16 and BF16 map onto ggml types and are read in place.</summary>
public static class SafetensorsDType
{
    /// <summary>Bytes per element of a dtype named by the format, or null for a name the format does not define.</summary>
    public static int? ElementBytes(string dtype) => dtype switch
    {
        "BOOL" or "U8" or "I8" or "F8_E5M2" or "F8_E4M3" or "F8_E8M0" => 1,
        "I16" or "U16" or "F16" or "BF16" => 2,
        "I32" or "U32" or "F32" => 4,
        "I64" or "U64" or "F64" or "C64" => 8,
        _ => null,
    };

    /// <summary>The ggml type a weight of this dtype is read as, or null when Kvq cannot use it as a weight.</summary>
    public static GgmlType? ToGgml(string dtype) => dtype switch
    {
        "F32" => GgmlType.F32,
        "F16" => GgmlType.F16,
        "BF16" => GgmlType.BF16,
        _ => null,
    };

    public const string Supported = "F32, F16 or BF16";
    public const string Known = "BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64, C64";
}
