using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors;

/// <summary>Horizontal sums shared by the dot-product kernels (attention tiles, GEMM).</summary>
public static class Reductions
{
    /// <summary>The four horizontal sums of a, b, c, d (AVX-512F): halves folded pairwise across registers, so the
    /// 16 -> 1 reduction is shared by four results (~14 instructions for four sums; Vector512.Sum takes ~24 for one,
    /// as it adds 128-bit lanes separately).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var ab = Avx512F.Shuffle4x128(a, b, 0x44) + Avx512F.Shuffle4x128(a, b, 0xEE);     // a's 8 partials | b's 8
        var cd = Avx512F.Shuffle4x128(c, d, 0x44) + Avx512F.Shuffle4x128(c, d, 0xEE);
        var x = Avx512F.Shuffle4x128(ab, cd, 0x88) + Avx512F.Shuffle4x128(ab, cd, 0xDD);  // 4 partials each: a | b | c | d
        x += Avx512F.Shuffle(x, x, 0xB1);
        x += Avx512F.Shuffle(x, x, 0x4E);
        return Avx512F.PermuteVar16x32(x, Vector512.Create(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)).GetLower().GetLower();
    }
}
