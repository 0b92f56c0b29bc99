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

    private static readonly Lazy<IntPtr> CpuLib = new(() =>
    {
        var path = QuantizedFixtures.LoadedNativeLibrary("libggml-cpu");
        return path != null && NativeLibrary.TryLoad(path, out var h) ? h : IntPtr.Zero;
    });

    /// <summary>Whether the CPU backend LLamaSharp loaded (libggml-cpu, the variant for this machine) was found.</summary>
    public static bool CpuAvailable => CpuLib.Value != IntPtr.Zero;

    private static IntPtr CpuExport(string name) =>
        NativeLibrary.TryGetExport(CpuLib.Value, name, out var p) ? p
            : throw new InvalidOperationException($"libggml-cpu has no export {name}");

    /// <summary>ggml-cpu's quantize_row_q8_0 / q8_1 / q8_K (the SIMD encoders it applies to activations).</summary>
    public static void CpuQuantizeActivations(GgmlType t, ReadOnlySpan<float> src, Span<byte> dst)
    {
        Assert.True(dst.Length >= GgmlTypeInfo.RowBytes(t, src.Length));
        string name = t switch { GgmlType.Q8_0 => "q8_0", GgmlType.Q8_1 => "q8_1", GgmlType.Q8_K => "q8_K", _ => throw new ArgumentException(t.ToString()) };
        var fn = (delegate* unmanaged<float*, byte*, long, void>)CpuExport("quantize_row_" + name);
        fixed (float* s = src)
        fixed (byte* d = dst)
            fn(s, d, src.Length);
    }

    /// <summary>ggml-cpu's type traits of <paramref name="t"/>: (vec_dot_type, vec_dot(n, &amp;s, bs, x, bx, y, by, nrc)).
    /// The struct is { from_float, vec_dot, vec_dot_type, nrows }.</summary>
    public static (GgmlType VecDotType, IntPtr VecDot) CpuTraits(GgmlType t)
    {
        var get = (delegate* unmanaged<int, byte*>)CpuExport("ggml_get_type_traits_cpu");
        byte* traits = get((int)t);
        return ((GgmlType)(*(int*)(traits + 16)), *(IntPtr*)(traits + 8));
    }

    /// <summary>ggml-cpu's GELU table (ggml_table_gelu_f16: gelu of every f16 bit pattern, as f16 bits), after
    /// ggml_cpu_init (which fills it; called again here, it does nothing).</summary>
    public static ushort[] CpuGeluTable()
    {
        ((delegate* unmanaged<void>)CpuExport("ggml_cpu_init"))();
        var table = (ushort*)CpuExport("ggml_table_gelu_f16");
        return new ReadOnlySpan<ushort>(table, 1 << 16).ToArray();
    }

    /// <summary>ggml-cpu's own dot of a weight row with an encoded activation row (one row, nrc 1).</summary>
    public static float CpuVecDot(GgmlType weight, int n, ReadOnlySpan<byte> w, ReadOnlySpan<byte> xq)
    {
        var fn = (delegate* unmanaged<int, float*, nuint, byte*, nuint, byte*, nuint, int, void>)CpuTraits(weight).VecDot;
        float s = 0;
        fixed (byte* pw = w)
        fixed (byte* px = xq)
            fn(n, &s, 0, pw, 0, px, 0, 1);
        return s;
    }
}
