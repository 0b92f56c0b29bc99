// Decode attention's shared definitions (decode_attention.cu and the kernel lab's decode_attention_lab.cu): head
// dim, chunk and tile sizes, the slot counts of the nuqB-1% layout, the code-stream readers, the warp reductions and
// the AttnArgs struct (Attention/AttnArgs.cs mirrors it). The layout itself is described in decode_attention.cu.
#ifndef KVQ_DECODE_COMMON_CUH
#define KVQ_DECODE_COMMON_CUH

#include "common.cuh"

#define D 128
#define CHUNK 256
#define WARPS 4
#define THREADS (WARPS * 32)
#define TILE 8
#define TILES_PER_WARP (CHUNK / WARPS / TILE)
#define KSLOTS 4
#define VSLOTS 2

// Codes of a lane form one bit stream per tile: token t, lane channel i at bit (4t + i) * B of the lane's B words
// (3-bit codes may straddle two words).
template <int B>
__device__ __forceinline__ int code_of(const u32 (&w)[B], int t, int i)
{
    const int o = (4 * t + i) * B, wi = o >> 5, bi = o & 31;
    if (bi + B <= 32) return (w[wi] >> bi) & ((1 << B) - 1);
    return __funnelshift_r(w[wi], w[wi + 1], bi) & ((1 << B) - 1);
}

// Code of channel c of stream token tok for one head (random access: the sparse passes).
template <int B>
__device__ __forceinline__ int code_at(const u32* codes, long tok, int c)
{
    long tile = tok / TILE;
    int t = (int)(tok % TILE), lane = c >> 2, i = c & 3;
    const u32* base = codes + tile * B * 32 + lane;
    const int o = (4 * t + i) * B, wi = o >> 5, bi = o & 31;
    if (bi + B <= 32) return (base[wi * 32] >> bi) & ((1 << B) - 1);
    return __funnelshift_r(base[wi * 32], base[(wi + 1) * 32], bi) & ((1 << B) - 1);
}

// RoPE frequency of pair j (adjacent-pair style): base^(-2j/D), in double so that long positions stay exact.
__device__ __forceinline__ double rope_theta(int j, double log2base) { return exp2(-2.0 * j / D * log2base); }

// Reduce-scatter of N partial sums across the warp (N a power of two <= 32): afterwards the lane holds in v[0] the
// warp-wide sum of value lane >> (5 - log2 N). Half of the values travel at each step, so N values cost N - 1
// shuffles plus the remaining plain steps, instead of 5 N.
template <int N, int M>
__device__ __forceinline__ void rs_step(float* v, int lane)
{
    if constexpr (M == 0) return;
    else
    {
        if constexpr (N > 1)
        {
            constexpr int H = N / 2;
            bool up = (lane & M) != 0;
#pragma unroll
            for (int i = 0; i < H; ++i)
            {
                float send = up ? v[i] : v[i + H];
                float keep = up ? v[i + H] : v[i];
                v[i] = keep + __shfl_xor_sync(FULL, send, M);
            }
            rs_step<H, M / 2>(v, lane);
        }
        else
        {
            v[0] += __shfl_xor_sync(FULL, v[0], M);
            rs_step<1, M / 2>(v, lane);
        }
    }
}

template <int N> struct Log2 { static constexpr int value = 1 + Log2<N / 2>::value; };
template <> struct Log2<1> { static constexpr int value = 0; };

struct AttnArgs
{
    int n;            // tokens in the stream (quantized or f16), positions sink .. sink + n - 1
    int sink;         // f16 sink tokens before the stream (positions 0 .. sink-1), merged by attn_reduce
    int chunksPerSplit;
    int splits;
    float scale;
    double log2base;  // log2 of the RoPE base (double: angles at 1M positions)
};

#endif
