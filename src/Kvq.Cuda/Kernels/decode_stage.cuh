// Staging for the nuq decode kernels from version 4 on: 8 warps per block, a 256-token chunk's codes, slots and
// value scales copied into shared memory with cp.async (Stage: the byte offsets per layout), and the helpers that
// version 6 introduced (one-LOP3 table addresses, warp prefix counts) and later versions keep.
#ifndef KVQ_DECODE_STAGE_CUH
#define KVQ_DECODE_STAGE_CUH

#include "decode_common.cuh"

#define W4 8
#define T4 (W4 * 32)
#define TPW4 (CHUNK / W4 / TILE)

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// KS, VS: key and value slots per token (v6 also compiles the dense layout, KS = VS = 0: no slot arrays). KL: u32
// words of the sparse layout's per-chunk key outlier record (kv_encode.cu, KLIST; 0 = none).
template <int B, int KS = KSLOTS, int VS = VSLOTS, int KL = 0>
struct Stage
{
    static constexpr int KC = 0, VC = CHUNK * D * B / 8, KSV = 2 * VC, KSC = KSV + CHUNK * KS * 2,
        KLR = KSC + CHUNK * KS, VZR = KLR + KL * 4, VSV = VZR + CHUNK * 4, VSC = VSV + CHUNK * VS * 2, BYTES = VSC + CHUNK * VS;
};

__device__ __forceinline__ void copy_range(char* dst, const char* src, int bytes)
{
    for (int off = threadIdx.x * 16; off < bytes; off += T4 * 16) cp_async16(dst + off, src + off);
}

template <int B, int KS = KSLOTS, int KL = 0>
__device__ __forceinline__ void issue_keys(char* st, long hb, long cbase, const u32* kcodes, const u16* kslotv, const u8* kslotc)
{
    using S = Stage<B, KS, VSLOTS, KL>;
    copy_range(st + S::KC, (const char*)(kcodes + (hb + cbase) / TILE * B * 32), S::VC);
    if constexpr (KS > 0)
    {
        copy_range(st + S::KSV, (const char*)(kslotv + (hb + cbase) * KS), CHUNK * KS * 2);
        copy_range(st + S::KSC, (const char*)(kslotc + (hb + cbase) * KS), CHUNK * KS);
    }
    // The sparse layout passes its key outlier records as kslotv (KL words per head and chunk; hb + cbase is a multiple of CHUNK).
    if constexpr (KL > 0) copy_range(st + S::KLR, (const char*)kslotv + (hb + cbase) / CHUNK * KL * 4, KL * 4);
    cp_async_commit();
}

template <int B, int KS = KSLOTS, int VS = VSLOTS, int KL = 0>
__device__ __forceinline__ void issue_values(char* st, long hb, long cbase, const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc)
{
    using S = Stage<B, KS, VS, KL>;
    copy_range(st + S::VC, (const char*)(vcodes + (hb + cbase) / TILE * B * 32), S::VC);
    copy_range(st + S::VZR, (const char*)(vzr + hb + cbase), CHUNK * 4);
    if constexpr (VS > 0)
    {
        copy_range(st + S::VSV, (const char*)(vslotv + (hb + cbase) * VS), CHUNK * VS * 2);
        copy_range(st + S::VSC, (const char*)(vslotc + (hb + cbase) * VS), CHUNK * VS);
    }
    cp_async_commit();
}


__device__ __forceinline__ u32 and_or(u32 a, u32 mask, u32 c)
{
    u32 d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(mask), "r"(c));   // (a & mask) | c
    return d;
}

template <int B>
__device__ __forceinline__ u32 code_addr6(const u32 (&w)[B], int t, int i, u32 laneOff)
{
    const int o = (4 * t + i) * B, wi = o >> 5, bi = o & 31;
    u32 x;
    if (bi + B <= 32) x = bi >= 7 ? (w[wi] >> (bi - 7)) : (w[wi] << (7 - bi));
    else x = __funnelshift_r(w[wi], w[wi + 1], bi - 7);
    return and_or(x, (u32)((1 << B) - 1) << 7, laneOff);
}

// Exclusive prefix count across the warp.
__device__ __forceinline__ int warp_prefix(int v, int lane, int& total)
{
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) { int y = __shfl_up_sync(FULL, x, o); if (lane >= o) x += y; }
    total = __shfl_sync(FULL, x, 31);
    return x - v;
}

#endif
