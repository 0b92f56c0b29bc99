using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>16 floats per vector (AVX-512F). Bytes are widened with vpmovzxbd/vpmovsxbd straight from memory.</summary>
internal readonly unsafe struct Avx512QuantLanes : IQuantLanes<Vector512<float>>
{
    /// <summary>Also honours the runtime's hint (false where 512-bit ops would lower the clock), as TensorPrimitives does.</summary>
    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;
    public static int Count => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Broadcast(float v) => Vector512.Create(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) =>
        Avx512F.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Vector512.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> U8(byte* p) => Avx512F.ConvertToVector512Int32(Vector128.Load(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> F(Vector512<int> v) => Avx512F.ConvertToVector512Single(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> I8(byte* p) =>
        F(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)p)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles(byte* p, int bias, out Vector512<float> lo, out Vector512<float> hi)
    {
        var v = U8(p);
        var b = Vector512.Create(bias);
        lo = F((v & Vector512.Create(15)) + b);
        hi = F((v >> 4) + b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles5(byte* p, uint hLo, uint hHi, int bias, out Vector512<float> lo, out Vector512<float> hi)
    {
        var v = U8(p);
        var idx = Vector512<uint>.Indices;
        var one = Vector512.Create(1u);
        // Bit i of the 32-bit high-bit word goes to lane i: shift each lane right by its own index.
        var bl = ((Avx512F.ShiftRightLogicalVariable(Vector512.Create(hLo), idx) & one) << 4).AsInt32();
        var bh = ((Avx512F.ShiftRightLogicalVariable(Vector512.Create(hHi), idx) & one) << 4).AsInt32();
        var b = Vector512.Create(bias);
        lo = F(((v & Vector512.Create(15)) | bl) + b);
        hi = F(((v >> 4) | bh) + b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles5K(byte* p, byte* qh, int bit, out Vector512<float> lo, out Vector512<float> hi)
    {
        var v = U8(p);
        var h = U8(qh);
        var one = Vector512.Create(1);
        lo = F((v & Vector512.Create(15)) | (((h >> bit) & one) << 4));
        hi = F((v >> 4) | (((h >> (bit + 1)) & one) << 4));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Six(byte* ql, byte* qh, out Vector512<float> q1, out Vector512<float> q2,
        out Vector512<float> q3, out Vector512<float> q4)
    {
        var a = U8(ql);
        var c = U8(ql + 32);
        var h = U8(qh);
        var m15 = Vector512.Create(15);
        var m48 = Vector512.Create(48); // qh's 2-bit field, already shifted to bits 4-5
        var b = Vector512.Create(32);
        q1 = F(((a & m15) | ((h << 4) & m48)) - b);
        q2 = F(((c & m15) | ((h << 2) & m48)) - b);
        q3 = F(((a >> 4) | (h & m48)) - b);
        q4 = F(((c >> 4) | ((h >> 2) & m48)) - b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Iq4(byte* p, out Vector512<float> lo, out Vector512<float> hi)
    {
        var v = Vector128.Load(p);
        var levels = Vector128.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
        var m15 = Vector128.Create((byte)15);
        // pshufb: byte i of the result is levels[index byte i] (indices are 0..15, so no lane is zeroed).
        lo = F(Avx512F.ConvertToVector512Int32(Ssse3.Shuffle(levels, (v & m15).AsSByte())));
        hi = F(Avx512F.ConvertToVector512Int32(Ssse3.Shuffle(levels, ((v >> 4) & m15).AsSByte())));
    }
}
