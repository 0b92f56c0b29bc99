using System.Runtime.InteropServices;
using Kvq.Tensors;

namespace Kvq.Tests.Tensors;

/// <summary>
/// ggml's own scalar reference codecs, called in the libggml-base that LLamaSharp's llama.cpp loaded into this
/// process: dequantize_row_* (the to_float of ggml's type traits) and quantize_row_*_ref. These are the oracle that
/// QuantFormats must match bit for bit. <see cref="Available"/> is false where the library cannot be found; it is found
/// on Linux (the tests that need it are [LinuxTheory]: skipped with the reason elsewhere, failing on Linux without it).
/// </summary>
internal static unsafe class GgmlReference
{
    private static readonly Lazy<IntPtr> Lib = new(() =>
    {
        var path = QuantizedFixtures.LoadedNativeLibrary("libggml-base");
        return path != null && NativeLibrary.TryLoad(path, out var h) ? h : IntPtr.Zero;
    });

    public static bool Available => Lib.Value != IntPtr.Zero;

    private static IntPtr Export(string name) =>
        NativeLibrary.TryGetExport(Lib.Value, name, out var p) ? p
            : throw new InvalidOperationException($"libggml-base has no export {name}");

    private static string Suffix(GgmlType t) => t switch
    {
        GgmlType.Q4_0 => "q4_0",
        GgmlType.Q4_1 => "q4_1",
        GgmlType.Q5_0 => "q5_0",
        GgmlType.Q5_1 => "q5_1",
        GgmlType.Q8_0 => "q8_0",
        GgmlType.Q4_K => "q4_K",
        GgmlType.Q5_K => "q5_K",
        GgmlType.Q6_K => "q6_K",
        GgmlType.IQ4_NL => "iq4_nl",
        GgmlType.IQ4_XS => "iq4_xs",
        _ => throw new ArgumentException(t.ToString()),
    };

    /// <summary>ggml's dequantize_row_&lt;type&gt;(blocks, y, k).</summary>
    public static void Dequantize(GgmlType t, ReadOnlySpan<byte> src, Span<float> dst)
    {
        Assert.True(src.Length >= GgmlTypeInfo.RowBytes(t, dst.Length));
        var fn = (delegate* unmanaged<byte*, float*, long, void>)Export("dequantize_row_" + Suffix(t));
        fixed (byte* s = src)
        fixed (float* d = dst)
            fn(s, d, dst.Length);
    }

    /// <summary>ggml's quantize_row_&lt;type&gt;_ref(x, blocks, k).</summary>
    public static void Quantize(GgmlType t, ReadOnlySpan<float> src, Span<byte> dst)
    {
        Assert.True(dst.Length >= GgmlTypeInfo.RowBytes(t, src.Length));
        var fn = (delegate* unmanaged<float*, byte*, long, void>)Export("quantize_row_" + Suffix(t) + "_ref");
        fixed (float* s = src)
        fixed (byte* d = dst)
            fn(s, d, src.Length);
    }
}
