using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>8 floats per vector (AVX2 + FMA). Bytes are widened with vpmovzxbd/vpmovsxbd straight from memory.</summary>
internal readonly unsafe struct Avx2QuantLanes : IQuantLanes<Vector256<float>>
{
    public static bool IsSupported => Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported;
    public static int Count => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Vector256.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Broadcast(float v) => Vector256.Create(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v) => Vector256.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> U8(byte* p) => Avx2.ConvertToVector256Int32(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> F(Vector256<int> v) => Avx.ConvertToVector256Single(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> I8(byte* p) =>
        F(Avx2.ConvertToVector256Int32((sbyte*)p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles(byte* p, int bias, out Vector256<float> lo, out Vector256<float> hi)
    {
        var v = U8(p);
        var b = Vector256.Create(bias);
        lo = F((v & Vector256.Create(15)) + b);
        hi = F((v >> 4) + b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles5(byte* p, uint hLo, uint hHi, int bias, out Vector256<float> lo, out Vector256<float> hi)
    {
        var v = U8(p);
        var idx = Vector256<uint>.Indices;
        var one = Vector256.Create(1u);
        // Bit i of the 32-bit high-bit word goes to lane i: shift each lane right by its own index.
        var bl = ((Avx2.ShiftRightLogicalVariable(Vector256.Create(hLo), idx) & one) << 4).AsInt32();
        var bh = ((Avx2.ShiftRightLogicalVariable(Vector256.Create(hHi), idx) & one) << 4).AsInt32();
        var b = Vector256.Create(bias);
        lo = F(((v & Vector256.Create(15)) | bl) + b);
        hi = F(((v >> 4) | bh) + b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles5K(byte* p, byte* qh, int bit, out Vector256<float> lo, out Vector256<float> hi)
    {
        var v = U8(p);
        var h = U8(qh);
        var one = Vector256.Create(1);
        lo = F((v & Vector256.Create(15)) | (((h >> bit) & one) << 4));
        hi = F((v >> 4) | (((h >> (bit + 1)) & one) << 4));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Six(byte* ql, byte* qh, out Vector256<float> q1, out Vector256<float> q2,
        out Vector256<float> q3, out Vector256<float> q4)
    {
        var a = U8(ql);
        var c = U8(ql + 32);
        var h = U8(qh);
        var m15 = Vector256.Create(15);
        var m48 = Vector256.Create(48); // qh's 2-bit field, already shifted to bits 4-5
        var b = Vector256.Create(32);
        q1 = F(((a & m15) | ((h << 4) & m48)) - b);
        q2 = F(((c & m15) | ((h << 2) & m48)) - b);
        q3 = F(((a >> 4) | (h & m48)) - b);
        q4 = F(((c >> 4) | ((h >> 2) & m48)) - b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Iq4(byte* p, out Vector256<float> lo, out Vector256<float> hi)
    {
        var v = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(p)).AsByte();   // 8 bytes: only Count lanes are read
        var levels = Vector128.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
        var m15 = Vector128.Create((byte)15);
        // pshufb: byte i of the result is levels[index byte i] (indices are 0..15, so no lane is zeroed).
        lo = F(Avx2.ConvertToVector256Int32(Ssse3.Shuffle(levels, (v & m15).AsSByte())));
        hi = F(Avx2.ConvertToVector256Int32(Ssse3.Shuffle(levels, ((v >> 4) & m15).AsSByte())));
    }
}
