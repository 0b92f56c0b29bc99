// Decode attention for one layer, batch 1, one query token per head: f16 cache (post-RoPE keys) and the KVQuant
// family (pre-RoPE nuq keys with per-channel scales, per-token nuq values, sparse outliers in fixed per-token slots,
// f16 attention-sink tokens). Head dim 128. Split-K: a block serves one KV head and all of its query heads (GQA:
// G = query heads per KV head) over a range of 256-token chunks and writes an unnormalised partial (m, l, acc);
// attn_reduce merges the splits and the sink tokens.
//
// GPU layout (the backend's own; the CPU codec's math): a lane owns channels 4*lane .. 4*lane+3 (RoPE pairs
// 2*lane, 2*lane+1 in the adjacent-pair style). Codes come in tiles of 8 tokens: B 32-bit words per lane, stored
// [tile][word][lane] so that a warp reads 128 contiguous bytes per word. Word contents for lane l, token t of the
// tile, channel i of the lane:
//   bit (4t + i) * B of the lane's B words, as one little-endian bit stream (3-bit codes may straddle words).
// Key outliers: S slots per token (f16 value, u8 channel, 0xFF = empty); the dense code of an outlier channel is
// still stored (clamped), so the kernels add (value - dense) as a sparse correction. Values: per token u32
// (f16 zero | f16 range << 16) and 2 slots (the largest and the smallest value, KVQuant's k = 1 per tail at D=128).
// Dense layout (v6 only, kernels *_r6_dense; the CPU spec nuqB without outliers): no slots at all, keys clamped into
// their codes and the value zero/range over all of the token's values; the slot counts are template parameters
// (KS, VS = 0) and the outlier passes compile out. Sparse-key layout (*_r6_sparse): the dense codes plus, per KV
// head and 256-token chunk, a record of KL = 48 u32 words (count, then up to 47 key outliers: f16 value << 16 | token
// in the chunk << 8 | channel), passed in the kslotv argument (kv_encode.cu, encode_key_list).

#define D 128
#define CHUNK 256
#define WARPS 4
#define THREADS (WARPS * 32)
#define TILE 8
#define TILES_PER_WARP (CHUNK / WARPS / TILE)
#define FULL 0xffffffffu
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define KSLOTS 4
#define VSLOTS 2

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

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

// Shared by both cache kinds: online softmax over one chunk of scores (s_sc holds raw scaled scores on entry and
// probabilities on exit), per query head g handled by warp g.
template <int G>
__device__ __forceinline__ void chunk_softmax(float (*s_sc)[CHUNK], float* s_m, float* s_l, float* s_alpha, int warp, int lane)
{
    for (int g = warp; g < G; g += WARPS)
    {
        float v[CHUNK / 32];
        float cm = -INFINITY;
#pragma unroll
        for (int j = 0; j < CHUNK / 32; ++j) { v[j] = s_sc[g][lane + 32 * j]; cm = fmaxf(cm, v[j]); }
#pragma unroll
        for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
        float mo = s_m[g], mn = fmaxf(mo, cm);
        // Nothing seen yet and nothing in this chunk (all masked): keep everything as is.
        float alpha = mn == -INFINITY ? 1.f : __expf(mo - mn);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < CHUNK / 32; ++j)
        {
            float p = mn == -INFINITY ? 0.f : __expf(v[j] - mn);
            s_sc[g][lane + 32 * j] = p;
            sum += p;
        }
#pragma unroll
        for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(FULL, sum, o);
        __syncwarp();
        if (lane == 0) { s_m[g] = mn; s_l[g] = s_l[g] * alpha + sum; s_alpha[g] = alpha; }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// KB, VB: bits of key and value codes, 16 = the f16 cache. G: query heads per KV head. VER: kernel version of the
// nuq path (the lab times each; see dev/kernels/README.md):
//   1: one tile (8 tokens) of codes loaded at a time, outlier angles by double sincos, byte loads of slot indices;
//   2: a warp's 8 tiles of codes loaded at once before any use (8x the bytes in flight: v1 was latency-bound),
//      slot indices read as one word per token, outlier angles from a per-chunk table (double) and a float
//      sincos of the offset inside the chunk.
template <int KB, int VB, int G, int VER>
__device__ void attn_split(const AttnArgs a, const float* __restrict__ q,
    const u32* __restrict__ kcodes, const u16* __restrict__ kslotv, const u8* __restrict__ kslotc,
    const float* __restrict__ kzero, const float* __restrict__ krange, const float* __restrict__ kcb,
    const u32* __restrict__ vcodes, const u32* __restrict__ vzr, const u16* __restrict__ vslotv,
    const u8* __restrict__ vslotc, const float* __restrict__ vcb,
    const u16* __restrict__ kf16, const u16* __restrict__ vf16,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, long padded)
{
    constexpr bool F16 = KB == 16;
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ float s_q[G][D];
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    __shared__ float s_vout[G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G];
    __shared__ float s_red[WARPS][G][D];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];   // v2: theta per pair, cos/sin at the chunk start

    for (int i = threadIdx.x; i < G * D; i += THREADS)
    {
        s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
        s_vout[i / D][i % D] = 0.f;
    }
    if constexpr (!F16)
    {
        if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & ((1 << KB) - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & ((1 << VB) - 1)]; }
        for (int i = threadIdx.x; i < D; i += THREADS) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    }
    if (threadIdx.x < G) { s_m[threadIdx.x] = -INFINITY; s_l[threadIdx.x] = 0.f; }
    if (threadIdx.x < D / 2) s_th[threadIdx.x] = (float)rope_theta(threadIdx.x, a.log2base);
    __syncthreads();

    float qr[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[g][i] = s_q[g][4 * lane + i];
    float kz[4], kr[4];
    float stepc[2], steps[2];
    if constexpr (!F16)
    {
#pragma unroll
        for (int i = 0; i < 4; ++i) { kz[i] = s_kz[4 * lane + i]; kr[i] = s_kr[4 * lane + i]; }
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            double s, c;
            sincos(rope_theta(2 * lane + p, a.log2base), &s, &c);
            stepc[p] = (float)c; steps[p] = (float)s;
        }
    }
    float acc[G][4], accz[G];
#pragma unroll
    for (int g = 0; g < G; ++g) { accz[g] = 0.f; acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f; }

    const long hb = (long)h * padded;   // first stream token of this head
    for (int chunk = c0; chunk < c1; ++chunk)
    {
        // ---- scores -------------------------------------------------------------------------------------------
        const long tok0 = (long)chunk * CHUNK + warp * (CHUNK / WARPS);
        if constexpr (!F16 && VER >= 2)
            if (threadIdx.x < D / 2)
            {
                double sn, cs;
                sincos((double)(a.sink + (long)chunk * CHUNK) * rope_theta(threadIdx.x, a.log2base), &sn, &cs);
                s_cb[threadIdx.x] = (float)cs; s_sb[threadIdx.x] = (float)sn;
            }
        float rc[2], rs[2];
        if constexpr (!F16)
        {
            // Exact angles at the warp's first token (double), then a float recurrence over its 64 tokens: the
            // rotation by theta per token costs 4 flops per pair instead of a sincos.
#pragma unroll
            for (int p = 0; p < 2; ++p)
            {
                double s, c;
                sincos((double)(a.sink + tok0) * rope_theta(2 * lane + p, a.log2base), &s, &c);
                rc[p] = (float)c; rs[p] = (float)s;
            }
        }
        if constexpr (!F16 && VER >= 2)
        {
            u32 kw[TILES_PER_WARP][KB];
            const u32* src = kcodes + ((hb + tok0) / TILE) * KB * 32 + lane;
#pragma unroll
            for (int tile = 0; tile < TILES_PER_WARP; ++tile)
#pragma unroll
                for (int b = 0; b < KB; ++b) kw[tile][b] = src[(tile * KB + b) * 32];
#pragma unroll
            for (int tile = 0; tile < TILES_PER_WARP; ++tile)
            {
                const long t0 = tok0 + tile * TILE;
                float part[TILE * G];
#pragma unroll
                for (int t = 0; t < TILE; ++t)
                {
                    float k[4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) k[i] = fmaf(kr[i], s_kcb[code_of<KB>(kw[tile], t, i)], kz[i]);
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
                rs_step<TILE * G, 16>(part, lane);
                constexpr int SH = 5 - Log2<TILE * G>::value;
                if ((lane & ((1 << SH) - 1)) == 0)
                {
                    int idx = lane >> SH, t = idx / G, g = idx % G;
                    s_sc[g][warp * (CHUNK / WARPS) + tile * TILE + t] = t0 + t < a.n ? part[0] : -INFINITY;
                }
            }
        }
        else _Pragma("unroll 1")
        for (int tile = 0; tile < TILES_PER_WARP; ++tile)
        {
            const long t0 = tok0 + tile * TILE;
            float part[TILE * G];
            if constexpr (F16)
            {
                uint2 raw[TILE];
#pragma unroll
                for (int t = 0; t < TILE; ++t) raw[t] = *(const uint2*)(kf16 + (hb + t0 + t) * D + 4 * lane);
#pragma unroll
                for (int t = 0; t < TILE; ++t)
                {
                    float k0 = h2f(raw[t].x & 0xffff), k1 = h2f(raw[t].x >> 16), k2 = h2f(raw[t].y & 0xffff), k3 = h2f(raw[t].y >> 16);
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * k0 + qr[g][1] * k1 + qr[g][2] * k2 + qr[g][3] * k3;
                }
            }
            else
            {
                u32 w[KB];
                const u32* src = kcodes + ((hb + t0) / TILE) * KB * 32 + lane;
#pragma unroll
                for (int b = 0; b < KB; ++b) w[b] = src[b * 32];
#pragma unroll
                for (int t = 0; t < TILE; ++t)
                {
                    float k[4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) k[i] = fmaf(kr[i], s_kcb[code_of<KB>(w, t, i)], kz[i]);
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
            }
            rs_step<TILE * G, 16>(part, lane);
            constexpr int SH = 5 - Log2<TILE * G>::value;
            if ((lane & ((1 << SH) - 1)) == 0)
            {
                int idx = lane >> SH, t = idx / G, g = idx % G;
                s_sc[g][warp * (CHUNK / WARPS) + tile * TILE + t] = t0 + t < a.n ? part[0] : -INFINITY;
            }
        }
        __syncthreads();

        // ---- key outliers: sparse corrections to the scores (value - dense decode), rotated at their position ---
        if constexpr (!F16 && VER >= 2)
        {
            const long cbase = (long)chunk * CHUNK;
            const u32* khead = kcodes + (hb / TILE) * KB * 32;
            for (int tt = threadIdx.x; tt < CHUNK; tt += THREADS)
            {
                long tok = cbase + tt;
                if (tok >= a.n) break;
                u32 cs4 = *(const u32*)(kslotc + (hb + tok) * KSLOTS);   // KSLOTS == 4: one word per token
                if (cs4 == 0xffffffffu) continue;
#pragma unroll
                for (int sl = 0; sl < KSLOTS; ++sl)
                {
                    int c = (cs4 >> (8 * sl)) & 0xff;
                    if (c == 0xff) continue;
                    float d = h2f(kslotv[(hb + tok) * KSLOTS + sl]) - fmaf(s_kr[c], s_kcb[code_at<KB>(khead, tok, c)], s_kz[c]);
                    float so, co;
                    sincosf((float)tt * s_th[c >> 1], &so, &co);
                    float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                    float cs = cb * co - sb * so, sn = sb * co + cb * so;
                    int c0e = c & ~1;
                    float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
                }
            }
            __syncthreads();
        }
        else if constexpr (!F16)
        {
            const long cbase = (long)chunk * CHUNK;
            for (int e = threadIdx.x; e < CHUNK * KSLOTS; e += THREADS)
            {
                long tok = cbase + e / KSLOTS;
                if (tok >= a.n) break;
                int c = kslotc[(hb + tok) * KSLOTS + e % KSLOTS];
                if (c == 0xff) continue;
                float val = h2f(kslotv[(hb + tok) * KSLOTS + e % KSLOTS]);
                float dense = fmaf(s_kr[c], s_kcb[code_at<KB>(kcodes + (hb / TILE) * KB * 32, tok, c)], s_kz[c]);
                float d = val - dense;
                double sn, cs;
                sincos((double)(a.sink + tok) * rope_theta(c >> 1, a.log2base), &sn, &cs);
                // Rotating d at channel c: (d cos, d sin) on (c, c+1) when c is even, (-d sin, d cos) on (c-1, c) when odd.
                int c0e = c & ~1;
                float x0 = (c & 1) ? -d * (float)sn : d * (float)cs, x1 = (c & 1) ? d * (float)cs : d * (float)sn;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][e / KSLOTS], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
            }
            __syncthreads();
        }

        chunk_softmax<G>(s_sc, s_m, s_l, s_alpha, warp, lane);
        __syncthreads();

        // ---- values ---------------------------------------------------------------------------------------------
        float alpha[G];
#pragma unroll
        for (int g = 0; g < G; ++g)
        {
            alpha[g] = s_alpha[g];
            accz[g] *= alpha[g];
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[g][i] *= alpha[g];
        }
        if constexpr (!F16)
            for (int i = threadIdx.x; i < G * D; i += THREADS) s_vout[i / D][i % D] *= s_alpha[i / D];
        if constexpr (!F16 && VER >= 2)
        {
            u32 vw[TILES_PER_WARP][VB];
            const u32* src = vcodes + ((hb + tok0) / TILE) * VB * 32 + lane;
#pragma unroll
            for (int tile = 0; tile < TILES_PER_WARP; ++tile)
#pragma unroll
                for (int b = 0; b < VB; ++b) vw[tile][b] = src[(tile * VB + b) * 32];
            // zero/range of the warp's 64 tokens: two words per lane, handed out by shuffles.
            const u32 zrA = vzr[hb + tok0 + lane], zrB = vzr[hb + tok0 + 32 + lane];
#pragma unroll
            for (int tile = 0; tile < TILES_PER_WARP; ++tile)
            {
                const int st = warp * (CHUNK / WARPS) + tile * TILE;
                float p[G][TILE];
#pragma unroll
                for (int g = 0; g < G; ++g)
                {
                    float4 a0 = *(const float4*)&s_sc[g][st], a1 = *(const float4*)&s_sc[g][st + 4];
                    p[g][0] = a0.x; p[g][1] = a0.y; p[g][2] = a0.z; p[g][3] = a0.w;
                    p[g][4] = a1.x; p[g][5] = a1.y; p[g][6] = a1.z; p[g][7] = a1.w;
                }
#pragma unroll
                for (int t = 0; t < TILE; ++t)
                {
                    u32 zrt = __shfl_sync(FULL, tile < TILES_PER_WARP / 2 ? zrA : zrB, (tile * TILE + t) & 31);
                    float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
                    float l0 = s_vcb[code_of<VB>(vw[tile], t, 0)], l1 = s_vcb[code_of<VB>(vw[tile], t, 1)];
                    float l2 = s_vcb[code_of<VB>(vw[tile], t, 2)], l3 = s_vcb[code_of<VB>(vw[tile], t, 3)];
#pragma unroll
                    for (int g = 0; g < G; ++g)
                    {
                        float pr = p[g][t] * r;
                        accz[g] = fmaf(p[g][t], z, accz[g]);
                        acc[g][0] = fmaf(pr, l0, acc[g][0]); acc[g][1] = fmaf(pr, l1, acc[g][1]);
                        acc[g][2] = fmaf(pr, l2, acc[g][2]); acc[g][3] = fmaf(pr, l3, acc[g][3]);
                    }
                }
            }
        }
        else _Pragma("unroll 1")
        for (int tile = 0; tile < TILES_PER_WARP; ++tile)
        {
            const long t0 = tok0 + tile * TILE;
            const int st = warp * (CHUNK / WARPS) + tile * TILE;
            float p[G][TILE];
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float4 a0 = *(const float4*)&s_sc[g][st], a1 = *(const float4*)&s_sc[g][st + 4];
                p[g][0] = a0.x; p[g][1] = a0.y; p[g][2] = a0.z; p[g][3] = a0.w;
                p[g][4] = a1.x; p[g][5] = a1.y; p[g][6] = a1.z; p[g][7] = a1.w;
            }
            if constexpr (F16)
            {
                uint2 raw[TILE];
#pragma unroll
                for (int t = 0; t < TILE; ++t) raw[t] = *(const uint2*)(vf16 + (hb + t0 + t) * D + 4 * lane);
#pragma unroll
                for (int t = 0; t < TILE; ++t)
                {
                    float v0 = h2f(raw[t].x & 0xffff), v1 = h2f(raw[t].x >> 16), v2 = h2f(raw[t].y & 0xffff), v3 = h2f(raw[t].y >> 16);
#pragma unroll
                    for (int g = 0; g < G; ++g)
                    {
                        acc[g][0] = fmaf(p[g][t], v0, acc[g][0]); acc[g][1] = fmaf(p[g][t], v1, acc[g][1]);
                        acc[g][2] = fmaf(p[g][t], v2, acc[g][2]); acc[g][3] = fmaf(p[g][t], v3, acc[g][3]);
                    }
                }
            }
            else
            {
                u32 w[VB];
                const u32* src = vcodes + ((hb + t0) / TILE) * VB * 32 + lane;
#pragma unroll
                for (int b = 0; b < VB; ++b) w[b] = src[b * 32];
                uint4 zr0 = *(const uint4*)(vzr + hb + t0), zr1 = *(const uint4*)(vzr + hb + t0 + 4);
                u32 zr[TILE] = {zr0.x, zr0.y, zr0.z, zr0.w, zr1.x, zr1.y, zr1.z, zr1.w};
#pragma unroll
                for (int t = 0; t < TILE; ++t)
                {
                    // v = zero + range * level: the zero part is the same for all channels, so it is summed once
                    // per token (accz) and the range folds into the probability.
                    float z = h2f(zr[t] & 0xffff), r = h2f(zr[t] >> 16);
                    float l0 = s_vcb[code_of<VB>(w, t, 0)], l1 = s_vcb[code_of<VB>(w, t, 1)];
                    float l2 = s_vcb[code_of<VB>(w, t, 2)], l3 = s_vcb[code_of<VB>(w, t, 3)];
#pragma unroll
                    for (int g = 0; g < G; ++g)
                    {
                        float pr = p[g][t] * r;
                        accz[g] = fmaf(p[g][t], z, accz[g]);
                        acc[g][0] = fmaf(pr, l0, acc[g][0]); acc[g][1] = fmaf(pr, l1, acc[g][1]);
                        acc[g][2] = fmaf(pr, l2, acc[g][2]); acc[g][3] = fmaf(pr, l3, acc[g][3]);
                    }
                }
            }
        }
        if constexpr (!F16)
        {
            __syncthreads();   // s_vout rescaled by every thread before the corrections land
            const long cbase = (long)chunk * CHUNK;
            if constexpr (VER >= 2)
            {
                for (int tt = threadIdx.x; tt < CHUNK; tt += THREADS)
                {
                    long tok = cbase + tt;
                    if (tok >= a.n) break;
                    u32 cc = *(const u16*)(vslotc + (hb + tok) * VSLOTS);   // VSLOTS == 2: one half-word per token
                    u32 vv = *(const u32*)(vslotv + (hb + tok) * VSLOTS);
                    u32 zrt = vzr[hb + tok];
                    float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
                    const u32* vhead = vcodes + (hb / TILE) * VB * 32;
#pragma unroll
                    for (int sl = 0; sl < VSLOTS; ++sl)
                    {
                        int c = (cc >> (8 * sl)) & 0xff;
                        float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[code_at<VB>(vhead, tok, c)], z);
#pragma unroll
                        for (int g = 0; g < G; ++g) atomicAdd(&s_vout[g][c], s_sc[g][tt] * d);
                    }
                }
            }
            else
                for (int e = threadIdx.x; e < CHUNK * VSLOTS; e += THREADS)
            {
                long tok = cbase + e / VSLOTS;
                if (tok >= a.n) break;
                int c = vslotc[(hb + tok) * VSLOTS + e % VSLOTS];
                float val = h2f(vslotv[(hb + tok) * VSLOTS + e % VSLOTS]);
                u32 zrt = vzr[hb + tok];
                float dense = fmaf(h2f(zrt >> 16), s_vcb[code_at<VB>(vcodes + (hb / TILE) * VB * 32, tok, c)], h2f(zrt & 0xffff));
                float d = val - dense;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_vout[g][c], s_sc[g][e / VSLOTS] * d);
            }
        }
        __syncthreads();   // s_sc is rewritten by the next chunk
    }

    // ---- merge the warps and write this split's partial --------------------------------------------------------
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) s_red[warp][g][4 * lane + i] = acc[g][i] + accz[g];
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += THREADS)
    {
        int g = i / D, c = i % D;
        float v = s_vout[g][c];
#pragma unroll
        for (int w = 0; w < WARPS; ++w) v += s_red[w][g][c];
        part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
    }
    if (threadIdx.x < G) part_ml[(long)(h * G + threadIdx.x) * a.splits + split] = make_float2(s_m[threadIdx.x], s_l[threadIdx.x]);
}

// Merge the splits of each query head and the f16 sink tokens (pre-RoPE keys, rotated here): one block per query
// head, one thread per channel.
extern "C" __global__ void __launch_bounds__(D) attn_reduce(const AttnArgs a, int group, const float* __restrict__ q,
    const float* __restrict__ part_acc, const float2* __restrict__ part_ml,
    const u16* __restrict__ sink_k, const u16* __restrict__ sink_v, float* __restrict__ out)
{
    const int qh = blockIdx.x, kvh = qh / group, c = threadIdx.x;
    __shared__ float s_red[D / 32];
    float M = -INFINITY;
    for (int s = 0; s < a.splits; ++s) M = fmaxf(M, part_ml[(long)qh * a.splits + s].x);
    float sink_s[8];
    for (int j = 0; j < a.sink && j < 8; ++j)
    {
        float kc = h2f(sink_k[((long)kvh * a.sink + j) * D + c]), kp = h2f(sink_k[((long)kvh * a.sink + j) * D + (c ^ 1)]);
        double sn, cs;
        sincos((double)j * rope_theta(c >> 1, a.log2base), &sn, &cs);
        float rot = (c & 1) ? kp * (float)sn + kc * (float)cs : kc * (float)cs - kp * (float)sn;
        float v = q[(long)qh * D + c] * a.scale * rot;
        for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
        if ((c & 31) == 0) s_red[c >> 5] = v;
        __syncthreads();
        float s = 0.f;
        for (int w = 0; w < D / 32; ++w) s += s_red[w];
        __syncthreads();
        sink_s[j] = s;
        M = fmaxf(M, s);
    }
    float num = 0.f, den = 0.f;
    for (int s = 0; s < a.splits; ++s)
    {
        float2 ml = part_ml[(long)qh * a.splits + s];
        if (ml.x == -INFINITY) continue;
        float f = __expf(ml.x - M);
        num += f * part_acc[((long)qh * a.splits + s) * D + c];
        den += f * ml.y;
    }
    for (int j = 0; j < a.sink && j < 8; ++j)
    {
        float f = __expf(sink_s[j] - M);
        num += f * h2f(sink_v[((long)kvh * a.sink + j) * D + c]);
        den += f;
    }
    out[(long)qh * D + c] = num / den;
}


// ---------------------------------------------------------------------------------------------------------------
// Version 3 of the nuq path (v2 measured about 45 SM cycles per token and KV head on an H200; the budget for 2.5x
// over fp16 SDPA is about 12). Changes, each cutting instructions per token:
//  - no double precision in the token loops: the chunk's start angles are advanced in double by 64 threads (one
//    complex multiply per chunk) and each warp derives its start from them and a per-lane constant;
//  - G = 1: the query is rotated instead of the keys, and the rotation recurrence runs on the rotated, range-scaled
//    query u_i = r_i (R(-theta t) q)_i itself, so the per-token work per pair is the recurrence (4) and two FMAs
//    with a per-lane table T_i[code] = level + zero_i / range_i (the dot then equals q . R(k)). G > 1: the table
//    holds zero_i + range_i * level (no dequant FMA) and the keys are rotated once for the G heads;
//  - per-lane tables laid out [code][lane channel][lane]: every lane reads its own bank, never a conflict;
//  - the value's per-token zero and range fold into the softmax pass: p * range is stored beside p and
//    sum(p * zero) is one scalar per head, so the value loop is lookups and FMAs only.
template <int B, int G>
__device__ void attn_v3(const AttnArgs a, const float* __restrict__ q,
    const u32* __restrict__ kcodes, const u16* __restrict__ kslotv, const u8* __restrict__ kslotc,
    const float* __restrict__ kzero, const float* __restrict__ krange, const float* __restrict__ kcb,
    const u32* __restrict__ vcodes, const u32* __restrict__ vzr, const u16* __restrict__ vslotv,
    const u8* __restrict__ vslotc, const float* __restrict__ vcb,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, long padded)
{
    constexpr int L = 1 << B;
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ __align__(16) float s_pr[G][CHUNK];
    __shared__ float s_q[G][D];
    __shared__ float s_kt[L][4][32];
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    __shared__ float s_vout[G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G], s_pz[G];
    __shared__ float s_red[WARPS][G][D];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];

    for (int i = threadIdx.x; i < G * D; i += THREADS)
    {
        s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
        s_vout[i / D][i % D] = 0.f;
    }
    if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & (L - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & (L - 1)]; }
    for (int i = threadIdx.x; i < D; i += THREADS) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    for (int i = threadIdx.x; i < L * D; i += THREADS)
    {
        int l = i / D, ci = (i % D) / 32, ln = i % 32, c = 4 * ln + ci;
        float z = kzero[h * D + c], r = krange[h * D + c], lev = kcb[l];
        s_kt[l][ci][ln] = G == 1 ? lev + z / r : fmaf(r, lev, z);
    }
    if (threadIdx.x < G) { s_m[threadIdx.x] = -INFINITY; s_l[threadIdx.x] = 0.f; s_pz[threadIdx.x] = 0.f; }
    // Chunk start angles, pair j = threadIdx.x < 64, kept in double across chunks.
    double dc = 1, ds = 0, stc = 1, sts = 0;
    if (threadIdx.x < D / 2)
    {
        double th = rope_theta(threadIdx.x, a.log2base);
        s_th[threadIdx.x] = (float)th;
        sincos((double)(a.sink + (long)c0 * CHUNK) * th, &ds, &dc);
        sincos((double)CHUNK * th, &sts, &stc);
    }
    __syncthreads();

    float qr[G][4], kr[4];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[g][i] = s_q[g][4 * lane + i];
#pragma unroll
    for (int i = 0; i < 4; ++i) kr[i] = s_kr[4 * lane + i];
    float stepc[2], steps[2], wc[2], ws[2], ua[2], ub[2];
#pragma unroll
    for (int p = 0; p < 2; ++p)
    {
        double th = rope_theta(2 * lane + p, a.log2base), sn, cs;
        sincos(th, &sn, &cs);
        stepc[p] = (float)cs; steps[p] = (float)sn;
        sincos((double)(warp * (CHUNK / WARPS)) * th, &sn, &cs);
        wc[p] = (float)cs; ws[p] = (float)sn;
        // u recurrence constants (G == 1): u0' = u0 c + u1 (r0/r1) s, u1' = u1 c - u0 (r1/r0) s.
        ua[p] = kr[2 * p] / kr[2 * p + 1] * steps[p];
        ub[p] = kr[2 * p + 1] / kr[2 * p] * steps[p];
    }
    float acc[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;

    const long hb = (long)h * padded;
    const u32* khead = kcodes + (hb / TILE) * B * 32;
    const u32* vhead = vcodes + (hb / TILE) * B * 32;
    for (int chunk = c0; chunk < c1; ++chunk)
    {
        const long cbase = (long)chunk * CHUNK;
        if (threadIdx.x < D / 2)
        {
            s_cb[threadIdx.x] = (float)dc; s_sb[threadIdx.x] = (float)ds;
            double t = dc * stc - ds * sts;
            ds = ds * stc + dc * sts;
            dc = t;
        }
        __syncthreads();
        const long tok0 = cbase + warp * (CHUNK / WARPS);
        u32 kw[TILES_PER_WARP][B];
        {
            const u32* src = kcodes + ((hb + tok0) / TILE) * B * 32 + lane;
#pragma unroll
            for (int tile = 0; tile < TILES_PER_WARP; ++tile)
#pragma unroll
                for (int b = 0; b < B; ++b) kw[tile][b] = src[(tile * B + b) * 32];
        }
        float rc[2], rs[2];
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            float cb = s_cb[2 * lane + p], sb = s_sb[2 * lane + p];
            rc[p] = cb * wc[p] - sb * ws[p];
            rs[p] = sb * wc[p] + cb * ws[p];
        }
        float u[4];
        if constexpr (G == 1)
        {
#pragma unroll
            for (int p = 0; p < 2; ++p)
            {
                float qa = qr[0][2 * p], qb = qr[0][2 * p + 1];
                u[2 * p] = (qa * rc[p] + qb * rs[p]) * kr[2 * p];
                u[2 * p + 1] = (qb * rc[p] - qa * rs[p]) * kr[2 * p + 1];
            }
        }
#pragma unroll
        for (int tile = 0; tile < TILES_PER_WARP; ++tile)
        {
            const long t0 = tok0 + tile * TILE;
            float part[TILE * G];
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float k[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) k[i] = s_kt[code_of<B>(kw[tile], t, i)][i][lane];
                if constexpr (G == 1)
                {
                    part[t] = u[0] * k[0] + u[1] * k[1] + u[2] * k[2] + u[3] * k[3];
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float u0 = u[2 * p], u1 = u[2 * p + 1];
                        u[2 * p] = u0 * stepc[p] + u1 * ua[p];
                        u[2 * p + 1] = u1 * stepc[p] - u0 * ub[p];
                    }
                }
                else
                {
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
            }
            rs_step<TILE * G, 16>(part, lane);
            constexpr int SH = 5 - Log2<TILE * G>::value;
            if ((lane & ((1 << SH) - 1)) == 0)
            {
                int idx = lane >> SH, t = idx / G, g = idx % G;
                s_sc[g][warp * (CHUNK / WARPS) + tile * TILE + t] = t0 + t < a.n ? part[0] : -INFINITY;
            }
        }
        __syncthreads();

        // Key outliers (as v2).
        for (int tt = threadIdx.x; tt < CHUNK; tt += THREADS)
        {
            long tok = cbase + tt;
            if (tok >= a.n) break;
            u32 cs4 = *(const u32*)(kslotc + (hb + tok) * KSLOTS);
            if (cs4 == 0xffffffffu) continue;
#pragma unroll
            for (int sl = 0; sl < KSLOTS; ++sl)
            {
                int c = (cs4 >> (8 * sl)) & 0xff;
                if (c == 0xff) continue;
                float d = h2f(kslotv[(hb + tok) * KSLOTS + sl]) - fmaf(s_kr[c], s_kcb[code_at<B>(khead, tok, c)], s_kz[c]);
                float so, co;
                sincosf((float)tt * s_th[c >> 1], &so, &co);
                float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                float cs = cb * co - sb * so, sn = sb * co + cb * so;
                int c0e = c & ~1;
                float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
            }
        }
        __syncthreads();

        // Softmax over the chunk, with the value scales folded in: s_pr = p * range_t, s_pz += sum p * zero_t.
        for (int g = warp; g < G; g += WARPS)
        {
            float v[CHUNK / 32];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j) { v[j] = s_sc[g][lane + 32 * j]; cm = fmaxf(cm, v[j]); }
#pragma unroll
            for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
            float mo = s_m[g], mn = fmaxf(mo, cm);
            float alpha = mn == -INFINITY ? 1.f : __expf(mo - mn);
            float sum = 0.f, pz = 0.f;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j)
            {
                float p = mn == -INFINITY ? 0.f : __expf(v[j] - mn);
                u32 zr = vzr[hb + cbase + lane + 32 * j];
                s_sc[g][lane + 32 * j] = p;
                s_pr[g][lane + 32 * j] = p * h2f(zr >> 16);
                sum += p;
                pz = fmaf(p, h2f(zr & 0xffff), pz);
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
            __syncwarp();
            if (lane == 0) { s_m[g] = mn; s_l[g] = s_l[g] * alpha + sum; s_alpha[g] = alpha; s_pz[g] = s_pz[g] * alpha + pz; }
        }
        __syncthreads();

        u32 vw[TILES_PER_WARP][B];
        {
            const u32* src = vcodes + ((hb + tok0) / TILE) * B * 32 + lane;
#pragma unroll
            for (int tile = 0; tile < TILES_PER_WARP; ++tile)
#pragma unroll
                for (int b = 0; b < B; ++b) vw[tile][b] = src[(tile * B + b) * 32];
        }
#pragma unroll
        for (int g = 0; g < G; ++g)
        {
            float al = s_alpha[g];
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[g][i] *= al;
        }
        for (int i = threadIdx.x; i < G * D; i += THREADS) s_vout[i / D][i % D] *= s_alpha[i / D];
#pragma unroll
        for (int tile = 0; tile < TILES_PER_WARP; ++tile)
        {
            const int st = warp * (CHUNK / WARPS) + tile * TILE;
            float pr[G][TILE];
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float4 a0 = *(const float4*)&s_pr[g][st], a1 = *(const float4*)&s_pr[g][st + 4];
                pr[g][0] = a0.x; pr[g][1] = a0.y; pr[g][2] = a0.z; pr[g][3] = a0.w;
                pr[g][4] = a1.x; pr[g][5] = a1.y; pr[g][6] = a1.z; pr[g][7] = a1.w;
            }
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float l0 = s_vcb[code_of<B>(vw[tile], t, 0)], l1 = s_vcb[code_of<B>(vw[tile], t, 1)];
                float l2 = s_vcb[code_of<B>(vw[tile], t, 2)], l3 = s_vcb[code_of<B>(vw[tile], t, 3)];
#pragma unroll
                for (int g = 0; g < G; ++g)
                {
                    acc[g][0] = fmaf(pr[g][t], l0, acc[g][0]); acc[g][1] = fmaf(pr[g][t], l1, acc[g][1]);
                    acc[g][2] = fmaf(pr[g][t], l2, acc[g][2]); acc[g][3] = fmaf(pr[g][t], l3, acc[g][3]);
                }
            }
        }
        __syncthreads();   // s_vout rescaled everywhere before the corrections land
        for (int tt = threadIdx.x; tt < CHUNK; tt += THREADS)
        {
            long tok = cbase + tt;
            if (tok >= a.n) break;
            u32 cc = *(const u16*)(vslotc + (hb + tok) * VSLOTS);
            u32 vv = *(const u32*)(vslotv + (hb + tok) * VSLOTS);
            u32 zrt = vzr[hb + tok];
            float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
#pragma unroll
            for (int sl = 0; sl < VSLOTS; ++sl)
            {
                int c = (cc >> (8 * sl)) & 0xff;
                float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[code_at<B>(vhead, tok, c)], z);
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_vout[g][c], s_sc[g][tt] * d);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) s_red[warp][g][4 * lane + i] = acc[g][i];
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += THREADS)
    {
        int g = i / D, c = i % D;
        float v = s_vout[g][c] + s_pz[g];
#pragma unroll
        for (int w = 0; w < WARPS; ++w) v += s_red[w][g][c];
        part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
    }
    if (threadIdx.x < G) part_ml[(long)(h * G + threadIdx.x) * a.splits + split] = make_float2(s_m[threadIdx.x], s_l[threadIdx.x]);
}


// ---------------------------------------------------------------------------------------------------------------
// Version 4. v3 ran at 1.4 instructions per SM cycle: each 256-token chunk went through five barrier-separated
// phases, and four of them began with a global load whose latency nobody covered (codes, key slots, the value
// scales in the softmax pass, value slots). Here everything a chunk needs (codes, slots, value scales: one
// contiguous range per array) is copied into shared memory with cp.async one chunk ahead (two stages), and the
// outlier passes are warp-local (each warp corrects its own 32 tokens; value corrections go to per-warp
// accumulators), leaving three barriers per chunk. 8 warps per block, 32 tokens per warp.
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

template <int B>
__device__ __forceinline__ void issue_chunk(char* st, long hb, long cbase, const u32* kcodes, const u16* kslotv, const u8* kslotc,
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc)
{
    using S = Stage<B>;
    copy_range(st + S::KC, (const char*)(kcodes + (hb + cbase) / TILE * B * 32), S::VC);
    copy_range(st + S::VC, (const char*)(vcodes + (hb + cbase) / TILE * B * 32), S::VC);
    copy_range(st + S::KSV, (const char*)(kslotv + (hb + cbase) * KSLOTS), CHUNK * KSLOTS * 2);
    copy_range(st + S::KSC, (const char*)(kslotc + (hb + cbase) * KSLOTS), CHUNK * KSLOTS);
    copy_range(st + S::VZR, (const char*)(vzr + hb + cbase), CHUNK * 4);
    copy_range(st + S::VSV, (const char*)(vslotv + (hb + cbase) * VSLOTS), CHUNK * VSLOTS * 2);
    copy_range(st + S::VSC, (const char*)(vslotc + (hb + cbase) * VSLOTS), CHUNK * VSLOTS);
    cp_async_commit();
}

template <int B, int G>
__device__ void attn_v4(const AttnArgs a, const float* __restrict__ q,
    const u32* __restrict__ kcodes, const u16* __restrict__ kslotv, const u8* __restrict__ kslotc,
    const float* __restrict__ kzero, const float* __restrict__ krange, const float* __restrict__ kcb,
    const u32* __restrict__ vcodes, const u32* __restrict__ vzr, const u16* __restrict__ vslotv,
    const u8* __restrict__ vslotc, const float* __restrict__ vcb,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, long padded)
{
    using S = Stage<B>;
    constexpr int L = 1 << B;
    extern __shared__ __align__(16) char s_stage[];   // 2 x S::BYTES
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);
    const long hb = (long)h * padded;
    if (c0 < c1) issue_chunk<B>(s_stage, hb, (long)c0 * CHUNK, kcodes, kslotv, kslotc, vcodes, vzr, vslotv, vslotc);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ __align__(16) float s_pr[G][CHUNK];
    __shared__ float s_q[G][D];
    __shared__ float s_kt[L][4][32];
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    __shared__ float s_vout[W4][G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G], s_pz[G];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];

    for (int i = threadIdx.x; i < G * D; i += T4) s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
    for (int i = threadIdx.x; i < W4 * G * D; i += T4) (&s_vout[0][0][0])[i] = 0.f;
    if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & (L - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & (L - 1)]; }
    for (int i = threadIdx.x; i < D; i += T4) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    for (int i = threadIdx.x; i < L * D; i += T4)
    {
        int l = i / D, ci = (i % D) / 32, ln = i % 32, c = 4 * ln + ci;
        float z = kzero[h * D + c], r = krange[h * D + c], lev = kcb[l];
        s_kt[l][ci][ln] = G == 1 ? lev + z / r : fmaf(r, lev, z);
    }
    if (threadIdx.x < G) { s_m[threadIdx.x] = -INFINITY; s_l[threadIdx.x] = 0.f; s_pz[threadIdx.x] = 0.f; }
    double dc = 1, ds = 0, stc = 1, sts = 0;
    if (threadIdx.x < D / 2)
    {
        double th = rope_theta(threadIdx.x, a.log2base);
        s_th[threadIdx.x] = (float)th;
        sincos((double)(a.sink + (long)c0 * CHUNK) * th, &ds, &dc);
        sincos((double)CHUNK * th, &sts, &stc);
    }
    __syncthreads();

    float qr[G][4], kr[4];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[g][i] = s_q[g][4 * lane + i];
#pragma unroll
    for (int i = 0; i < 4; ++i) kr[i] = s_kr[4 * lane + i];
    float stepc[2], steps[2], wc[2], ws[2], ua[2], ub[2];
#pragma unroll
    for (int p = 0; p < 2; ++p)
    {
        double th = rope_theta(2 * lane + p, a.log2base), sn, cs;
        sincos(th, &sn, &cs);
        stepc[p] = (float)cs; steps[p] = (float)sn;
        sincos((double)(warp * (CHUNK / W4)) * th, &sn, &cs);
        wc[p] = (float)cs; ws[p] = (float)sn;
        ua[p] = kr[2 * p] / kr[2 * p + 1] * steps[p];
        ub[p] = kr[2 * p + 1] / kr[2 * p] * steps[p];
    }
    float acc[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;

    for (int chunk = c0, it = 0; chunk < c1; ++chunk, ++it)
    {
        const long cbase = (long)chunk * CHUNK;
        char* st = s_stage + (it & 1) * S::BYTES;
        if (threadIdx.x < D / 2)
        {
            s_cb[threadIdx.x] = (float)dc; s_sb[threadIdx.x] = (float)ds;
            double t = dc * stc - ds * sts;
            ds = ds * stc + dc * sts;
            dc = t;
        }
        cp_async_wait_all();
        __syncthreads();   // this chunk's stage landed for everyone; everyone is done with the previous chunk
        if (chunk + 1 < c1)
            issue_chunk<B>(s_stage + ((it + 1) & 1) * S::BYTES, hb, cbase + CHUNK, kcodes, kslotv, kslotc, vcodes, vzr, vslotv, vslotc);
        const u32* kc = (const u32*)(st + S::KC);
        const u32* vc = (const u32*)(st + S::VC);
        const int w0 = warp * (CHUNK / W4);      // the warp's first token in the chunk

        // ---- scores ----
        float rc[2], rs[2];
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            float cb = s_cb[2 * lane + p], sb = s_sb[2 * lane + p];
            rc[p] = cb * wc[p] - sb * ws[p];
            rs[p] = sb * wc[p] + cb * ws[p];
        }
        float u[4];
        if constexpr (G == 1)
        {
#pragma unroll
            for (int p = 0; p < 2; ++p)
            {
                float qa = qr[0][2 * p], qb = qr[0][2 * p + 1];
                u[2 * p] = (qa * rc[p] + qb * rs[p]) * kr[2 * p];
                u[2 * p + 1] = (qb * rc[p] - qa * rs[p]) * kr[2 * p + 1];
            }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 kw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) kw[b] = kc[((w0 / TILE + tile) * B + b) * 32 + lane];
            float part[TILE * G];
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float k[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) k[i] = s_kt[code_of<B>(kw, t, i)][i][lane];
                if constexpr (G == 1)
                {
                    part[t] = u[0] * k[0] + u[1] * k[1] + u[2] * k[2] + u[3] * k[3];
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float u0 = u[2 * p], u1 = u[2 * p + 1];
                        u[2 * p] = u0 * stepc[p] + u1 * ua[p];
                        u[2 * p + 1] = u1 * stepc[p] - u0 * ub[p];
                    }
                }
                else
                {
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
            }
            rs_step<TILE * G, 16>(part, lane);
            constexpr int SH = 5 - Log2<TILE * G>::value;
            if ((lane & ((1 << SH) - 1)) == 0)
            {
                int idx = lane >> SH, t = idx / G, g = idx % G;
                s_sc[g][w0 + tile * TILE + t] = cbase + w0 + tile * TILE + t < a.n ? part[0] : -INFINITY;
            }
        }
        __syncwarp();
        // Key outliers of the warp's own tokens (lane = token), from the stage.
        {
            const int tt = w0 + lane;
            u32 cs4 = *(const u32*)(st + S::KSC + tt * KSLOTS);
            if (cbase + tt < a.n && cs4 != 0xffffffffu)
            {
                const u16* ksv = (const u16*)(st + S::KSV);
#pragma unroll
                for (int sl = 0; sl < KSLOTS; ++sl)
                {
                    int c = (cs4 >> (8 * sl)) & 0xff;
                    if (c == 0xff) continue;
                    float d = h2f(ksv[tt * KSLOTS + sl]) - fmaf(s_kr[c], s_kcb[code_at<B>(kc, tt, c)], s_kz[c]);
                    float so, co;
                    sincosf((float)tt * s_th[c >> 1], &so, &co);
                    float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                    float cs = cb * co - sb * so, sn = sb * co + cb * so;
                    int c0e = c & ~1;
                    float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
                }
            }
        }
        __syncthreads();

        // ---- softmax, value scales folded in ----
        const u32* zr = (const u32*)(st + S::VZR);
        for (int g = warp; g < G; g += W4)
        {
            float v[CHUNK / 32];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j) { v[j] = s_sc[g][lane + 32 * j]; cm = fmaxf(cm, v[j]); }
#pragma unroll
            for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
            float mo = s_m[g], mn = fmaxf(mo, cm);
            float alpha = mn == -INFINITY ? 1.f : __expf(mo - mn);
            float sum = 0.f, pz = 0.f;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j)
            {
                float p = mn == -INFINITY ? 0.f : __expf(v[j] - mn);
                u32 z = zr[lane + 32 * j];
                s_sc[g][lane + 32 * j] = p;
                s_pr[g][lane + 32 * j] = p * h2f(z >> 16);
                sum += p;
                pz = fmaf(p, h2f(z & 0xffff), pz);
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
            __syncwarp();
            if (lane == 0) { s_m[g] = mn; s_l[g] = s_l[g] * alpha + sum; s_alpha[g] = alpha; s_pz[g] = s_pz[g] * alpha + pz; }
        }
        __syncthreads();

        // ---- values ----
#pragma unroll
        for (int g = 0; g < G; ++g)
        {
            float al = s_alpha[g];
#pragma unroll
            for (int i = 0; i < 4; ++i) { acc[g][i] *= al; s_vout[warp][g][4 * lane + i] *= al; }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 vw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) vw[b] = vc[((w0 / TILE + tile) * B + b) * 32 + lane];
            const int stt = w0 + tile * TILE;
            float pr[G][TILE];
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float4 a0 = *(const float4*)&s_pr[g][stt], a1 = *(const float4*)&s_pr[g][stt + 4];
                pr[g][0] = a0.x; pr[g][1] = a0.y; pr[g][2] = a0.z; pr[g][3] = a0.w;
                pr[g][4] = a1.x; pr[g][5] = a1.y; pr[g][6] = a1.z; pr[g][7] = a1.w;
            }
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float l0 = s_vcb[code_of<B>(vw, t, 0)], l1 = s_vcb[code_of<B>(vw, t, 1)];
                float l2 = s_vcb[code_of<B>(vw, t, 2)], l3 = s_vcb[code_of<B>(vw, t, 3)];
#pragma unroll
                for (int g = 0; g < G; ++g)
                {
                    acc[g][0] = fmaf(pr[g][t], l0, acc[g][0]); acc[g][1] = fmaf(pr[g][t], l1, acc[g][1]);
                    acc[g][2] = fmaf(pr[g][t], l2, acc[g][2]); acc[g][3] = fmaf(pr[g][t], l3, acc[g][3]);
                }
            }
        }
        __syncwarp();   // the warp's value accumulators were rescaled by their own lanes before any correction
        {
            const int tt = w0 + lane;
            if (cbase + tt < a.n)
            {
                u32 cc = *(const u16*)(st + S::VSC + tt * VSLOTS);
                u32 vv = *(const u32*)(st + S::VSV + tt * VSLOTS * 2);
                u32 zrt = zr[tt];
                float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
#pragma unroll
                for (int sl = 0; sl < VSLOTS; ++sl)
                {
                    int c = (cc >> (8 * sl)) & 0xff;
                    float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[code_at<B>(vc, tt, c)], z);
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_vout[warp][g][c], s_sc[g][tt] * d);
                }
            }
        }
    }
    __syncthreads();
    // Merge: per-warp accumulators (stored over the warp's own correction rows) and the zero term.
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) s_vout[warp][g][4 * lane + i] += acc[g][i];
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += T4)
    {
        int g = i / D, c = i % D;
        float v = s_pz[g];
#pragma unroll
        for (int w = 0; w < W4; ++w) v += s_vout[w][g][c];
        part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
    }
    if (threadIdx.x < G) part_ml[(long)(h * G + threadIdx.x) * a.splits + split] = make_float2(s_m[threadIdx.x], s_l[threadIdx.x]);
}

// Version 5 (from v4, whose profile showed 79 instructions per token and KV head, the integer pipe the busiest,
// 2.5 instructions per cycle with 4 warps per scheduler, occupancy limited by registers and by the two 38 KB
// stages): one stage whose key half is refilled as soon as the scores are done and whose value half is refilled at
// the top of the next chunk (half the shared memory, same latency hiding), a register cap for 3 blocks per SM, and
// table addresses built with one shift and one LOP3 per code: tables are [code][lane], so the byte address is
// (code << 7) | (lane << 2) and the mask-and-or is a single instruction.
template <int B>
__device__ __forceinline__ u32 code_addr(const u32 (&w)[B], int t, int i, u32 laneOff)
{
    const int o = (4 * t + i) * B, wi = o >> 5, bi = o & 31;
    u32 x;
    if (bi + B <= 32) x = bi >= 7 ? (w[wi] >> (bi - 7)) : (w[wi] << (7 - bi));
    else x = __funnelshift_r(w[wi], w[wi + 1], bi - 7);
    return (x & ((u32)((1 << B) - 1) << 7)) | laneOff;
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

template <int B, int G>
__device__ void attn_v5(const AttnArgs a, const float* __restrict__ q,
    const u32* __restrict__ kcodes, const u16* __restrict__ kslotv, const u8* __restrict__ kslotc,
    const float* __restrict__ kzero, const float* __restrict__ krange, const float* __restrict__ kcb,
    const u32* __restrict__ vcodes, const u32* __restrict__ vzr, const u16* __restrict__ vslotv,
    const u8* __restrict__ vslotc, const float* __restrict__ vcb,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, long padded)
{
    using S = Stage<B>;
    constexpr int L = 1 << B;
    extern __shared__ __align__(16) char s_stage[];   // one S::BYTES stage: the key half and the value half refill apart
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);
    const long hb = (long)h * padded;
    if (c0 < c1) issue_keys<B>(s_stage, hb, (long)c0 * CHUNK, kcodes, kslotv, kslotc);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ __align__(16) float s_pr[G][CHUNK];
    __shared__ float s_q[G][D];
    __shared__ float s_kt[4][L][32];   // [lane channel][code][lane]: address = (code << 7 | lane << 2) + channel offset
    __shared__ float s_vt[L][32];      // the value codebook once per lane, same addressing
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    __shared__ float s_vout[W4][G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G], s_pz[G];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];

    for (int i = threadIdx.x; i < G * D; i += T4) s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
    for (int i = threadIdx.x; i < W4 * G * D; i += T4) (&s_vout[0][0][0])[i] = 0.f;
    if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & (L - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & (L - 1)]; }
    for (int i = threadIdx.x; i < D; i += T4) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    for (int i = threadIdx.x; i < L * D; i += T4)
    {
        int l = i / D, ci = (i % D) / 32, ln = i % 32, c = 4 * ln + ci;
        float z = kzero[h * D + c], r = krange[h * D + c], lev = kcb[l];
        s_kt[ci][l][ln] = G == 1 ? lev + z / r : fmaf(r, lev, z);
    }
    for (int i = threadIdx.x; i < L * 32; i += T4) s_vt[i / 32][i % 32] = vcb[i / 32];
    const u32 laneOff = lane << 2;
    if (threadIdx.x < G) { s_m[threadIdx.x] = -INFINITY; s_l[threadIdx.x] = 0.f; s_pz[threadIdx.x] = 0.f; }
    double dc = 1, ds = 0, stc = 1, sts = 0;
    if (threadIdx.x < D / 2)
    {
        double th = rope_theta(threadIdx.x, a.log2base);
        s_th[threadIdx.x] = (float)th;
        sincos((double)(a.sink + (long)c0 * CHUNK) * th, &ds, &dc);
        sincos((double)CHUNK * th, &sts, &stc);
    }
    __syncthreads();

    float qr[G][4], kr[4];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[g][i] = s_q[g][4 * lane + i];
#pragma unroll
    for (int i = 0; i < 4; ++i) kr[i] = s_kr[4 * lane + i];
    float stepc[2], steps[2], wc[2], ws[2], ua[2], ub[2];
#pragma unroll
    for (int p = 0; p < 2; ++p)
    {
        double th = rope_theta(2 * lane + p, a.log2base), sn, cs;
        sincos(th, &sn, &cs);
        stepc[p] = (float)cs; steps[p] = (float)sn;
        sincos((double)(warp * (CHUNK / W4)) * th, &sn, &cs);
        wc[p] = (float)cs; ws[p] = (float)sn;
        ua[p] = kr[2 * p] / kr[2 * p + 1] * steps[p];
        ub[p] = kr[2 * p + 1] / kr[2 * p] * steps[p];
    }
    float acc[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;

    for (int chunk = c0, it = 0; chunk < c1; ++chunk, ++it)
    {
        const long cbase = (long)chunk * CHUNK;
        char* st = s_stage;
        if (threadIdx.x < D / 2)
        {
            s_cb[threadIdx.x] = (float)dc; s_sb[threadIdx.x] = (float)ds;
            double t = dc * stc - ds * sts;
            ds = ds * stc + dc * sts;
            dc = t;
        }
        cp_async_wait_all();
        __syncthreads();   // this chunk's keys landed for everyone; everyone is done with the previous chunk's values
        issue_values<B>(st, hb, cbase, vcodes, vzr, vslotv, vslotc);
        const u32* kc = (const u32*)(st + S::KC);
        const u32* vc = (const u32*)(st + S::VC);
        const int w0 = warp * (CHUNK / W4);      // the warp's first token in the chunk

        // ---- scores ----
        float rc[2], rs[2];
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            float cb = s_cb[2 * lane + p], sb = s_sb[2 * lane + p];
            rc[p] = cb * wc[p] - sb * ws[p];
            rs[p] = sb * wc[p] + cb * ws[p];
        }
        float u[4];
        if constexpr (G == 1)
        {
#pragma unroll
            for (int p = 0; p < 2; ++p)
            {
                float qa = qr[0][2 * p], qb = qr[0][2 * p + 1];
                u[2 * p] = (qa * rc[p] + qb * rs[p]) * kr[2 * p];
                u[2 * p + 1] = (qb * rc[p] - qa * rs[p]) * kr[2 * p + 1];
            }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 kw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) kw[b] = kc[((w0 / TILE + tile) * B + b) * 32 + lane];
            float part[TILE * G];
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float k[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) k[i] = *(const float*)((const char*)&s_kt[i][0][0] + code_addr<B>(kw, t, i, laneOff));
                if constexpr (G == 1)
                {
                    part[t] = u[0] * k[0] + u[1] * k[1] + u[2] * k[2] + u[3] * k[3];
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float u0 = u[2 * p], u1 = u[2 * p + 1];
                        u[2 * p] = u0 * stepc[p] + u1 * ua[p];
                        u[2 * p + 1] = u1 * stepc[p] - u0 * ub[p];
                    }
                }
                else
                {
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
            }
            rs_step<TILE * G, 16>(part, lane);
            constexpr int SH = 5 - Log2<TILE * G>::value;
            if ((lane & ((1 << SH) - 1)) == 0)
            {
                int idx = lane >> SH, t = idx / G, g = idx % G;
                s_sc[g][w0 + tile * TILE + t] = cbase + w0 + tile * TILE + t < a.n ? part[0] : -INFINITY;
            }
        }
        __syncwarp();
        // Key outliers of the warp's own tokens (lane = token), from the stage.
        {
            const int tt = w0 + lane;
            u32 cs4 = *(const u32*)(st + S::KSC + tt * KSLOTS);
            if (cbase + tt < a.n && cs4 != 0xffffffffu)
            {
                const u16* ksv = (const u16*)(st + S::KSV);
#pragma unroll
                for (int sl = 0; sl < KSLOTS; ++sl)
                {
                    int c = (cs4 >> (8 * sl)) & 0xff;
                    if (c == 0xff) continue;
                    float d = h2f(ksv[tt * KSLOTS + sl]) - fmaf(s_kr[c], s_kcb[code_at<B>(kc, tt, c)], s_kz[c]);
                    float so, co;
                    sincosf((float)tt * s_th[c >> 1], &so, &co);
                    float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                    float cs = cb * co - sb * so, sn = sb * co + cb * so;
                    int c0e = c & ~1;
                    float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
                }
            }
        }
        cp_async_wait_all();   // this chunk's values (issued at the top)
        __syncthreads();
        if (chunk + 1 < c1) issue_keys<B>(st, hb, cbase + CHUNK, kcodes, kslotv, kslotc);

        // ---- softmax, value scales folded in ----
        const u32* zr = (const u32*)(st + S::VZR);
        for (int g = warp; g < G; g += W4)
        {
            float v[CHUNK / 32];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j) { v[j] = s_sc[g][lane + 32 * j]; cm = fmaxf(cm, v[j]); }
#pragma unroll
            for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
            float mo = s_m[g], mn = fmaxf(mo, cm);
            float alpha = mn == -INFINITY ? 1.f : __expf(mo - mn);
            float sum = 0.f, pz = 0.f;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j)
            {
                float p = mn == -INFINITY ? 0.f : __expf(v[j] - mn);
                u32 z = zr[lane + 32 * j];
                s_sc[g][lane + 32 * j] = p;
                s_pr[g][lane + 32 * j] = p * h2f(z >> 16);
                sum += p;
                pz = fmaf(p, h2f(z & 0xffff), pz);
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
            __syncwarp();
            if (lane == 0) { s_m[g] = mn; s_l[g] = s_l[g] * alpha + sum; s_alpha[g] = alpha; s_pz[g] = s_pz[g] * alpha + pz; }
        }
        __syncthreads();

        // ---- values ----
#pragma unroll
        for (int g = 0; g < G; ++g)
        {
            float al = s_alpha[g];
#pragma unroll
            for (int i = 0; i < 4; ++i) { acc[g][i] *= al; s_vout[warp][g][4 * lane + i] *= al; }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 vw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) vw[b] = vc[((w0 / TILE + tile) * B + b) * 32 + lane];
            const int stt = w0 + tile * TILE;
            float pr[G][TILE];
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float4 a0 = *(const float4*)&s_pr[g][stt], a1 = *(const float4*)&s_pr[g][stt + 4];
                pr[g][0] = a0.x; pr[g][1] = a0.y; pr[g][2] = a0.z; pr[g][3] = a0.w;
                pr[g][4] = a1.x; pr[g][5] = a1.y; pr[g][6] = a1.z; pr[g][7] = a1.w;
            }
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                const char* vt = (const char*)&s_vt[0][0];
                float l0 = *(const float*)(vt + code_addr<B>(vw, t, 0, laneOff)), l1 = *(const float*)(vt + code_addr<B>(vw, t, 1, laneOff));
                float l2 = *(const float*)(vt + code_addr<B>(vw, t, 2, laneOff)), l3 = *(const float*)(vt + code_addr<B>(vw, t, 3, laneOff));
#pragma unroll
                for (int g = 0; g < G; ++g)
                {
                    acc[g][0] = fmaf(pr[g][t], l0, acc[g][0]); acc[g][1] = fmaf(pr[g][t], l1, acc[g][1]);
                    acc[g][2] = fmaf(pr[g][t], l2, acc[g][2]); acc[g][3] = fmaf(pr[g][t], l3, acc[g][3]);
                }
            }
        }
        __syncwarp();   // the warp's value accumulators were rescaled by their own lanes before any correction
        {
            const int tt = w0 + lane;
            if (cbase + tt < a.n)
            {
                u32 cc = *(const u16*)(st + S::VSC + tt * VSLOTS);
                u32 vv = *(const u32*)(st + S::VSV + tt * VSLOTS * 2);
                u32 zrt = zr[tt];
                float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
#pragma unroll
                for (int sl = 0; sl < VSLOTS; ++sl)
                {
                    int c = (cc >> (8 * sl)) & 0xff;
                    float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[code_at<B>(vc, tt, c)], z);
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_vout[warp][g][c], s_sc[g][tt] * d);
                }
            }
        }
    }
    __syncthreads();
    // Merge: per-warp accumulators (stored over the warp's own correction rows) and the zero term.
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) s_vout[warp][g][4 * lane + i] += acc[g][i];
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += T4)
    {
        int g = i / D, c = i % D;
        float v = s_pz[g];
#pragma unroll
        for (int w = 0; w < W4; ++w) v += s_vout[w][g][c];
        part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
    }
    if (threadIdx.x < G) part_ml[(long)(h * G + threadIdx.x) * a.splits + split] = make_float2(s_m[threadIdx.x], s_l[threadIdx.x]);
}

#define NUQ_V5(B, G, MINB) \
extern "C" __global__ void __launch_bounds__(T4, MINB) attn_nuq_k##B##_v##B##_g##G##_r5(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v5<B, G>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }

#define NUQ_V4(B, G, MINB) \
extern "C" __global__ void __launch_bounds__(T4, MINB) attn_nuq_k##B##_v##B##_g##G##_r4(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v4<B, G>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }


// Version 6 (from v5: its SASS spent two LOP3 per code because the compiler re-derived lane << 2 from threadIdx in
// every address, and ran most of the four key-slot bodies per token although ~1.3 are filled): the mask-and-or is
// one explicit lop3 on a lane offset held in a register, and the key outliers are compacted per warp.
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

// KS, VS: key and value slots per token: 4 and 2 (nuqB-1%), or 0 and 0 for the dense layout (no outliers: the
// slot arrays are neither copied nor read, the outlier passes are compiled out).
template <int B, int G, int KS = KSLOTS, int VS = VSLOTS, int KL = 0>
__device__ void attn_v6(const AttnArgs a, const float* __restrict__ q,
    const u32* __restrict__ kcodes, const u16* __restrict__ kslotv, const u8* __restrict__ kslotc,
    const float* __restrict__ kzero, const float* __restrict__ krange, const float* __restrict__ kcb,
    const u32* __restrict__ vcodes, const u32* __restrict__ vzr, const u16* __restrict__ vslotv,
    const u8* __restrict__ vslotc, const float* __restrict__ vcb,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, long padded)
{
    static_assert((KS == 0 || KS == 4) && (VS == 0 || VS == 2), "slot layouts: 4 + 2 (nuqB-1%) or none (dense)");
    static_assert(KL == 0 || (KS == 0 && KL % 4 == 0), "the sparse key list replaces the key slots; whole 16-byte copies");
    using S = Stage<B, KS, VS, KL>;
    constexpr int L = 1 << B;
    extern __shared__ __align__(16) char s_stage[];   // one S::BYTES stage: the key half and the value half refill apart
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);
    const long hb = (long)h * padded;
    if (c0 < c1) issue_keys<B, KS, KL>(s_stage, hb, (long)c0 * CHUNK, kcodes, kslotv, kslotc);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ __align__(16) float s_pr[G][CHUNK];
    __shared__ float s_q[G][D];
    __shared__ float s_kt[4][L][32];   // [lane channel][code][lane]: address = (code << 7 | lane << 2) + channel offset
    __shared__ float s_vt[L][32];      // the value codebook once per lane, same addressing
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    __shared__ float s_vout[W4][G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G], s_pz[G];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];
    __shared__ u8 s_olist[W4][32 * (KS > 0 ? KS : 1)];   // per warp: the chunk's filled key slots, (token lane << 2) | slot

    for (int i = threadIdx.x; i < G * D; i += T4) s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
    for (int i = threadIdx.x; i < W4 * G * D; i += T4) (&s_vout[0][0][0])[i] = 0.f;
    if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & (L - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & (L - 1)]; }
    for (int i = threadIdx.x; i < D; i += T4) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    for (int i = threadIdx.x; i < L * D; i += T4)
    {
        int l = i / D, ci = (i % D) / 32, ln = i % 32, c = 4 * ln + ci;
        float z = kzero[h * D + c], r = krange[h * D + c], lev = kcb[l];
        s_kt[ci][l][ln] = G == 1 ? lev + z / r : fmaf(r, lev, z);
    }
    for (int i = threadIdx.x; i < L * 32; i += T4) s_vt[i / 32][i % 32] = vcb[i / 32];
    u32 laneOff;   // opaque to the compiler: otherwise it re-derives threadIdx << 2 inside every address
    asm("mov.b32 %0, %1;" : "=r"(laneOff) : "r"(lane << 2));
    if (threadIdx.x < G) { s_m[threadIdx.x] = -INFINITY; s_l[threadIdx.x] = 0.f; s_pz[threadIdx.x] = 0.f; }
    double dc = 1, ds = 0, stc = 1, sts = 0;
    if (threadIdx.x < D / 2)
    {
        double th = rope_theta(threadIdx.x, a.log2base);
        s_th[threadIdx.x] = (float)th;
        sincos((double)(a.sink + (long)c0 * CHUNK) * th, &ds, &dc);
        sincos((double)CHUNK * th, &sts, &stc);
    }
    __syncthreads();

    float qr[G][4], kr[4];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[g][i] = s_q[g][4 * lane + i];
#pragma unroll
    for (int i = 0; i < 4; ++i) kr[i] = s_kr[4 * lane + i];
    float stepc[2], steps[2], wc[2], ws[2], ua[2], ub[2];
#pragma unroll
    for (int p = 0; p < 2; ++p)
    {
        double th = rope_theta(2 * lane + p, a.log2base), sn, cs;
        sincos(th, &sn, &cs);
        stepc[p] = (float)cs; steps[p] = (float)sn;
        sincos((double)(warp * (CHUNK / W4)) * th, &sn, &cs);
        wc[p] = (float)cs; ws[p] = (float)sn;
        ua[p] = kr[2 * p] / kr[2 * p + 1] * steps[p];
        ub[p] = kr[2 * p + 1] / kr[2 * p] * steps[p];
    }
    float acc[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;

    for (int chunk = c0, it = 0; chunk < c1; ++chunk, ++it)
    {
        const long cbase = (long)chunk * CHUNK;
        char* st = s_stage;
        if (threadIdx.x < D / 2)
        {
            s_cb[threadIdx.x] = (float)dc; s_sb[threadIdx.x] = (float)ds;
            double t = dc * stc - ds * sts;
            ds = ds * stc + dc * sts;
            dc = t;
        }
        cp_async_wait_all();
        __syncthreads();   // this chunk's keys landed for everyone; everyone is done with the previous chunk's values
        issue_values<B, KS, VS, KL>(st, hb, cbase, vcodes, vzr, vslotv, vslotc);
        const u32* kc = (const u32*)(st + S::KC);
        const u32* vc = (const u32*)(st + S::VC);
        const int w0 = warp * (CHUNK / W4);      // the warp's first token in the chunk

        // ---- scores ----
        float rc[2], rs[2];
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            float cb = s_cb[2 * lane + p], sb = s_sb[2 * lane + p];
            rc[p] = cb * wc[p] - sb * ws[p];
            rs[p] = sb * wc[p] + cb * ws[p];
        }
        float u[4];
        if constexpr (G == 1)
        {
#pragma unroll
            for (int p = 0; p < 2; ++p)
            {
                float qa = qr[0][2 * p], qb = qr[0][2 * p + 1];
                u[2 * p] = (qa * rc[p] + qb * rs[p]) * kr[2 * p];
                u[2 * p + 1] = (qb * rc[p] - qa * rs[p]) * kr[2 * p + 1];
            }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 kw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) kw[b] = kc[((w0 / TILE + tile) * B + b) * 32 + lane];
            float part[TILE * G];
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float k[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) k[i] = *(const float*)((const char*)&s_kt[i][0][0] + code_addr6<B>(kw, t, i, laneOff));
                if constexpr (G == 1)
                {
                    part[t] = u[0] * k[0] + u[1] * k[1] + u[2] * k[2] + u[3] * k[3];
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float u0 = u[2 * p], u1 = u[2 * p + 1];
                        u[2 * p] = u0 * stepc[p] + u1 * ua[p];
                        u[2 * p + 1] = u1 * stepc[p] - u0 * ub[p];
                    }
                }
                else
                {
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
#pragma unroll
                    for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
            }
            rs_step<TILE * G, 16>(part, lane);
            constexpr int SH = 5 - Log2<TILE * G>::value;
            if ((lane & ((1 << SH) - 1)) == 0)
            {
                int idx = lane >> SH, t = idx / G, g = idx % G;
                s_sc[g][w0 + tile * TILE + t] = cbase + w0 + tile * TILE + t < a.n ? part[0] : -INFINITY;
            }
        }
        __syncwarp();
        // Key outliers of the warp's own tokens, compacted: slots fill from 0, so a token's count is the number of
        // low bytes that are not 0xff; the warp lists (token, slot) pairs and each lane takes every 32nd pair, instead
        // of every lane walking four slots while most of them are empty.
        if constexpr (KS > 0)
        {
            const u32* ksc = (const u32*)(st + S::KSC);
            const u16* ksv = (const u16*)(st + S::KSV);
            u32 cs4 = ksc[w0 + lane];
            int cnt = cbase + w0 + lane < a.n ? __popc(~__vcmpeq4(cs4, 0xffffffffu)) >> 3 : 0;
            int total, at = warp_prefix(cnt, lane, total);
            for (int k = 0; k < cnt; ++k) s_olist[warp][at + k] = (u8)((lane << 2) | k);
            __syncwarp();
            for (int e = lane; e < total; e += 32)
            {
                int ent = s_olist[warp][e], tt = w0 + (ent >> 2), sl = ent & 3;
                int c = (ksc[tt] >> (8 * sl)) & 0xff;
                float d = h2f(ksv[tt * KS + sl]) - fmaf(s_kr[c], s_kcb[code_at<B>(kc, tt, c)], s_kz[c]);
                float so, co;
                sincosf((float)tt * s_th[c >> 1], &so, &co);
                float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                float cs = cb * co - sb * so, sn = sb * co + cb * so;
                int c0e = c & ~1;
                float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
            }
        }
        if constexpr (KL > 0)
        {
            // The sparse layout's key outliers: the chunk's record (count, then entries in token order); each warp takes
            // the entries of its own 32 tokens, whose scores it has just written.
            const u32* rec = (const u32*)(st + S::KLR);
            const int total = (int)rec[0];
            for (int e = lane; e < total; e += 32)
            {
                u32 ent = rec[1 + e];
                int tt = (ent >> 8) & 0xff, c = ent & 0xff;
                if (tt < w0 || tt >= w0 + CHUNK / W4) continue;
                float d = h2f(ent >> 16) - fmaf(s_kr[c], s_kcb[code_at<B>(kc, tt, c)], s_kz[c]);
                float so, co;
                sincosf((float)tt * s_th[c >> 1], &so, &co);
                float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                float cs = cb * co - sb * so, sn = sb * co + cb * so;
                int c0e = c & ~1;
                float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
            }
        }
        cp_async_wait_all();   // this chunk's values (issued at the top)
        __syncthreads();
        if (chunk + 1 < c1) issue_keys<B, KS, KL>(st, hb, cbase + CHUNK, kcodes, kslotv, kslotc);

        // ---- softmax, value scales folded in ----
        const u32* zr = (const u32*)(st + S::VZR);
        for (int g = warp; g < G; g += W4)
        {
            float v[CHUNK / 32];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j) { v[j] = s_sc[g][lane + 32 * j]; cm = fmaxf(cm, v[j]); }
#pragma unroll
            for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
            float mo = s_m[g], mn = fmaxf(mo, cm);
            float alpha = mn == -INFINITY ? 1.f : __expf(mo - mn);
            float sum = 0.f, pz = 0.f;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j)
            {
                float p = mn == -INFINITY ? 0.f : __expf(v[j] - mn);
                u32 z = zr[lane + 32 * j];
                s_sc[g][lane + 32 * j] = p;
                s_pr[g][lane + 32 * j] = p * h2f(z >> 16);
                sum += p;
                pz = fmaf(p, h2f(z & 0xffff), pz);
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
            __syncwarp();
            if (lane == 0) { s_m[g] = mn; s_l[g] = s_l[g] * alpha + sum; s_alpha[g] = alpha; s_pz[g] = s_pz[g] * alpha + pz; }
        }
        __syncthreads();

        // ---- values ----
#pragma unroll
        for (int g = 0; g < G; ++g)
        {
            float al = s_alpha[g];
#pragma unroll
            for (int i = 0; i < 4; ++i) { acc[g][i] *= al; s_vout[warp][g][4 * lane + i] *= al; }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 vw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) vw[b] = vc[((w0 / TILE + tile) * B + b) * 32 + lane];
            const int stt = w0 + tile * TILE;
            float pr[G][TILE];
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float4 a0 = *(const float4*)&s_pr[g][stt], a1 = *(const float4*)&s_pr[g][stt + 4];
                pr[g][0] = a0.x; pr[g][1] = a0.y; pr[g][2] = a0.z; pr[g][3] = a0.w;
                pr[g][4] = a1.x; pr[g][5] = a1.y; pr[g][6] = a1.z; pr[g][7] = a1.w;
            }
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                const char* vt = (const char*)&s_vt[0][0];
                float l0 = *(const float*)(vt + code_addr6<B>(vw, t, 0, laneOff)), l1 = *(const float*)(vt + code_addr6<B>(vw, t, 1, laneOff));
                float l2 = *(const float*)(vt + code_addr6<B>(vw, t, 2, laneOff)), l3 = *(const float*)(vt + code_addr6<B>(vw, t, 3, laneOff));
#pragma unroll
                for (int g = 0; g < G; ++g)
                {
                    acc[g][0] = fmaf(pr[g][t], l0, acc[g][0]); acc[g][1] = fmaf(pr[g][t], l1, acc[g][1]);
                    acc[g][2] = fmaf(pr[g][t], l2, acc[g][2]); acc[g][3] = fmaf(pr[g][t], l3, acc[g][3]);
                }
            }
        }
        __syncwarp();   // the warp's value accumulators were rescaled by their own lanes before any correction
        if constexpr (VS > 0)
        {
            const int tt = w0 + lane;
            if (cbase + tt < a.n)
            {
                u32 cc = *(const u16*)(st + S::VSC + tt * VS);
                u32 vv = *(const u32*)(st + S::VSV + tt * VS * 2);
                u32 zrt = zr[tt];
                float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
#pragma unroll
                for (int sl = 0; sl < VS; ++sl)
                {
                    int c = (cc >> (8 * sl)) & 0xff;
                    float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[code_at<B>(vc, tt, c)], z);
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_vout[warp][g][c], s_sc[g][tt] * d);
                }
            }
        }
    }
    __syncthreads();
    // Merge: per-warp accumulators (stored over the warp's own correction rows) and the zero term.
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) s_vout[warp][g][4 * lane + i] += acc[g][i];
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += T4)
    {
        int g = i / D, c = i % D;
        float v = s_pz[g];
#pragma unroll
        for (int w = 0; w < W4; ++w) v += s_vout[w][g][c];
        part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
    }
    if (threadIdx.x < G) part_ml[(long)(h * G + threadIdx.x) * a.splits + split] = make_float2(s_m[threadIdx.x], s_l[threadIdx.x]);
}

#define NUQ_V6(B, G, MINB) \
extern "C" __global__ void __launch_bounds__(T4, MINB) attn_nuq_k##B##_v##B##_g##G##_r6(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v6<B, G>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }

// The dense layout (no outlier slots; same parameters, the slot pointers unused): v6 only.
// The sparse layout (dense codes + a per-chunk key outlier record of 48 words, passed as kslotv): v6 only.
#define NUQ_V6_SPARSE(B, G, MINB) \
extern "C" __global__ void __launch_bounds__(T4, MINB) attn_nuq_k##B##_v##B##_g##G##_r6_sparse(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v6<B, G, 0, 0, 48>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }

#define NUQ_V6_DENSE(B, G, MINB) \
extern "C" __global__ void __launch_bounds__(T4, MINB) attn_nuq_k##B##_v##B##_g##G##_r6_dense(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v6<B, G, 0, 0>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }

// ---------------------------------------------------------------------------------------------------------------
// Version 7 (from v6, whose 79 warp instructions per token and KV head went mostly to turning codes into numbers:
// per code a shift, a LOP3 and a 4-byte shared load): several codes per lookup. A lane's two RoPE pairs (channels
// 4 lane + {0,1} and {2,3}) are adjacent 2B-bit fields of its code stream, so one field indexes a table of float2:
//  - values: one pair table (the value codebook is shared by every channel; per-token zero/range are folded into
//    the softmax pass as in v6): entry e = (cb[e & (L-1)], cb[e >> B]); replicated per lane ([e][lane], 2^2B x 32
//    x 8 B: 4 KB at 2 bits, 16 KB at 3) or, at 4 bits, per half-warp lane ([e][lane & 15], 256 x 16 x 8 B = 32 KB):
//    a 64-bit load serves a half-warp per wavefront, so 16 copies are conflict-free;
//  - keys at 2 and 3 bits: per lane and pair its own table with the channel's zero folded in (G = 1: level +
//    zero/range, G > 1: zero + range x level), [pair][e][lane] (8 KB / 32 KB); 4-bit keys keep v6's one lookup per
//    code (per-lane pair tables would need 128 KB).
// Per token and lane: values 2 x (shift, LOP3, LDS.64) + 4 FMA per query head instead of 4 x (shift, LOP3, LDS) + 4;
// keys (2-3 bits) 2 x 3 instead of 4 x 3. The tables live in dynamic shared memory after the stage
// (DecodeAttention.SharedBytes mirrors the sizes; the kernel traps if it was given less). Table addresses are
// (field | copy offset) + a constant: the base folds into the load's immediate.
// Which tables a version uses (v7 and v8: key pairs below 4 bits, value pairs everywhere; v9 and v10, after run 25
// showed that v7's 32 KB tables cost the 3- and 4-bit kernels their third block per SM: key pairs at 2 bits only,
// value pairs at 2 and 3 bits (v9) and at 4 bits in 8 copies (v10; 16 KB; a half-warp then hits each bank pair about
// twice, as many wavefronts as v6's four single loads); VREP 0 = v6's single lookups in a 2 KB per-lane codebook.
__device__ constexpr bool kpair7(int B, int ver) { return ver >= 9 ? B == 2 : B < 4; }
__device__ constexpr int vrep7(int B, int ver) { return ver == 10 ? 8 : ver >= 9 ? (B == 4 ? 0 : 32) : (B == 4 ? 16 : 32); }
__device__ constexpr int log2c(int x) { return x <= 1 ? 0 : 1 + log2c(x / 2); }

template <int B, bool KP = (B < 4), int VR = (B == 4 ? 16 : 32)> struct Tabs7
{
    static constexpr int E = 1 << (2 * B);                        // entries of a pair table
    static constexpr int VREP = VR;                                // value table copies (0: single lookups)
    static constexpr int VSH = log2c(VR * 8);                      // log2 of an entry's bytes (copies x 8)
    static constexpr int VBYTES = VR ? E * VR * 8 : 0;
    static constexpr int KBYTES = KP ? 2 * E * 32 * 8 : 0;        // per-lane key pair tables
};

// Byte address of the pair field (token t, lane pair p) of a lane's B code words in a [e][copies] float2 table whose
// entries are 1 << SH bytes apart: the field is shifted into place and masked, the copy offset or-ed in (one LOP3).
template <int B, int SH>
__device__ __forceinline__ u32 pair_addr(const u32 (&w)[B], int t, int p, u32 laneOff)
{
    const int o = (4 * t + 2 * p) * B, wi = o >> 5, bi = o & 31;
    u32 x;
    if (bi + 2 * B <= 32) x = bi >= SH ? (w[wi] >> (bi - SH)) : (w[wi] << (SH - bi));
    else x = __funnelshift_r(w[wi], w[wi + 1], bi - SH);
    return and_or(x, (u32)((1 << (2 * B)) - 1) << SH, laneOff);
}

// v11 (tensor cores for a GQA group's scores): f16 pairs, ldmatrix and mma.m16n8k16 (sm_80+, PTX).
// pack_h2(lo, hi): lo in the lower half (the smaller k index of an mma operand register).
__device__ __forceinline__ u32 pack_h2(float lo, float hi)
{
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
// d += A (16 x 16, row) x B (16 x 8, col); A's rows 8-15 are zero here (a1 = a3 = 0), so d2, d3 stay 0.
__device__ __forceinline__ void mma_16816(float (&d)[4], u32 a0, u32 a2, u32 b0, u32 b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}
// v12 (the group's P x V on the tensor cores): tf32 m16n8k8 (one f32 register per element, no pairing along k, which
// runs over tokens here). tf32 keeps 10 mantissa bits, so each value level is split into hi = tf32(level) and lo =
// tf32(level - hi), both multiplied (two mmas): a level's rounding would otherwise repeat for every token that uses it
// (relative error ~1e-4 on the output, measured on the CPU); p x range is rounded per token, which averages out.
__device__ __forceinline__ u32 tf32r(float x)
{
    u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ void mma_1688(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Byte address of code i of a token's 4B-bit field f (the lane's 4 channels) in a [code][lane] float2 table.
template <int B>
__device__ __forceinline__ u32 vcode_addr(u32 f, int i, u32 laneOff8)
{
    const int sh = i * B;
    const u32 x = sh <= 8 ? (f << (8 - sh)) : (f >> (sh - 8));
    return and_or(x, (u32)((1 << B) - 1) << 8, laneOff8);
}

template <int B, int G, int KS = KSLOTS, int VS = VSLOTS, int KL = 0, bool WS = false, bool KP = (B < 4), int VR = (B == 4 ? 16 : 32), bool TC = false,
    bool TV = false>
__device__ void attn_v7(const AttnArgs a, const float* __restrict__ q,
    const u32* __restrict__ kcodes, const u16* __restrict__ kslotv, const u8* __restrict__ kslotc,
    const float* __restrict__ kzero, const float* __restrict__ krange, const float* __restrict__ kcb,
    const u32* __restrict__ vcodes, const u32* __restrict__ vzr, const u16* __restrict__ vslotv,
    const u8* __restrict__ vslotc, const float* __restrict__ vcb,
    float* __restrict__ part_acc, float2* __restrict__ part_ml, long padded)
{
    static_assert((KS == 0 || KS == 4) && (VS == 0 || VS == 2), "slot layouts: 4 + 2 (nuqB-1%) or none (dense)");
    static_assert(KL == 0 || (KS == 0 && KL % 4 == 0), "the sparse key list replaces the key slots; whole 16-byte copies");
    using S = Stage<B, KS, VS, KL>;
    using T = Tabs7<B, KP, VR>;
    constexpr int L = 1 << B;
    constexpr bool KPAIR = KP;
    extern __shared__ __align__(16) char s_stage[];   // the stage, then the value pair table, then the key pair tables
    const char* const s_vt2 = s_stage + S::BYTES;
    const char* const s_kt2 = s_vt2 + T::VBYTES;
    // v11: then per warp one tile of rotated keys in f16, [token][16-byte chunk ^ token][8 channels] (the XOR keeps
    // ldmatrix's 8 rows on 8 different bank groups); dynamic, since the static arrays already take ~40 of 48 KB.
    constexpr int K16 = TC ? W4 * TILE * D * 2 : 0;
    char* const s_k16 = s_stage + S::BYTES + T::VBYTES + T::KBYTES;
    {
        u32 dyn;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
        if (dyn < (u32)(S::BYTES + T::VBYTES + T::KBYTES + K16)) __trap();
    }
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);
    const long hb = (long)h * padded;
    if (c0 < c1) issue_keys<B, KS, KL>(s_stage, hb, (long)c0 * CHUNK, kcodes, kslotv, kslotc);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ __align__(16) float s_pr[G][CHUNK];
    __shared__ float s_q[G][D];
    __shared__ float s_kt[KPAIR ? 1 : 4][KPAIR ? 1 : L][32];   // single key lookups: v6's [lane channel][code][lane]
    __shared__ float s_vt[VR ? 1 : L][32];                       // single value lookups: v6's codebook once per lane
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    __shared__ float s_vout[W4][G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G], s_pz[G];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];
    __shared__ u8 s_olist[W4][32 * (KS > 0 ? KS : 1)];
    __shared__ float s_wm[WS ? W4 : 1][G], s_wl[WS ? W4 : 1][G], s_wpz[WS ? W4 : 1][G];   // v8: each warp's softmax state
    // v12: the value codebook per lane as (hi, lo) tf32 pairs, [code][lane].
    __shared__ __align__(16) float2 s_vhl[TV ? L : 1][32];
    static_assert(!TV || (WS && G % 2 == 0 && G <= 8), "v12: warp-local softmax, heads in pairs of mma columns");
    float wm[G], wl[G], wpz[G];   // v8: the warp's running max, sum and zero term (the same in every lane)
#pragma unroll
    for (int g = 0; g < G; ++g) { wm[g] = -INFINITY; wl[g] = 0.f; wpz[g] = 0.f; }

    for (int i = threadIdx.x; i < G * D; i += T4) s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
    for (int i = threadIdx.x; i < W4 * G * D; i += T4) (&s_vout[0][0][0])[i] = 0.f;
    if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & (L - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & (L - 1)]; }
    for (int i = threadIdx.x; i < D; i += T4) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    if constexpr (!KPAIR)
        for (int i = threadIdx.x; i < L * D; i += T4)
        {
            int l = i / D, ci = (i % D) / 32, ln = i % 32, c = 4 * ln + ci;
            float z = kzero[h * D + c], r = krange[h * D + c], lev = kcb[l];
            s_kt[ci][l][ln] = G == 1 ? lev + z / r : fmaf(r, lev, z);
        }
    else
        for (int i = threadIdx.x; i < 2 * T::E * 32; i += T4)
        {
            int ln = i % 32, e = (i / 32) % T::E, p = i / (32 * T::E), c = 4 * ln + 2 * p;
            float z0 = kzero[h * D + c], r0 = krange[h * D + c], z1 = kzero[h * D + c + 1], r1 = krange[h * D + c + 1];
            float l0 = kcb[e & (L - 1)], l1 = kcb[e >> B];
            ((float2*)(s_stage + S::BYTES + T::VBYTES))[i] = G == 1 ? make_float2(l0 + z0 / r0, l1 + z1 / r1) : make_float2(fmaf(r0, l0, z0), fmaf(r1, l1, z1));
        }
    if constexpr (VR > 0)
        for (int i = threadIdx.x; i < T::E * T::VREP; i += T4)
            ((float2*)(s_stage + S::BYTES))[i] = make_float2(vcb[(i / T::VREP) & (L - 1)], vcb[(i / T::VREP) >> B]);
    else
        for (int i = threadIdx.x; i < L * 32; i += T4) s_vt[i / 32][i % 32] = vcb[i / 32];
    if constexpr (TV)
        for (int i = threadIdx.x; i < L * 32; i += T4)
        {
            const float lev = vcb[i / 32];
            const u32 hi = tf32r(lev);
            s_vhl[i / 32][i % 32] = make_float2(__uint_as_float(hi), __uint_as_float(tf32r(lev - __uint_as_float(hi))));
        }
    u32 laneOff, vOff, kOff;   // opaque to the compiler: otherwise it re-derives threadIdx << 2 inside every address
    asm("mov.b32 %0, %1;" : "=r"(laneOff) : "r"(lane << 2));
    asm("mov.b32 %0, %1;" : "=r"(vOff) : "r"((lane & (VR > 0 ? VR - 1 : 0)) << 3));
    asm("mov.b32 %0, %1;" : "=r"(kOff) : "r"(lane << 3));
    u32 vOff8;
    asm("mov.b32 %0, %1;" : "=r"(vOff8) : "r"(lane << 3));
    if (threadIdx.x < G) { s_m[threadIdx.x] = -INFINITY; s_l[threadIdx.x] = 0.f; s_pz[threadIdx.x] = 0.f; }
    double dc = 1, ds = 0, stc = 1, sts = 0;
    if (threadIdx.x < D / 2)
    {
        double th = rope_theta(threadIdx.x, a.log2base);
        s_th[threadIdx.x] = (float)th;
        sincos((double)(a.sink + (long)c0 * CHUNK) * th, &ds, &dc);
        sincos((double)CHUNK * th, &sts, &stc);
    }
    __syncthreads();

    float qr[G][4], kr[4];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[g][i] = s_q[g][4 * lane + i];
#pragma unroll
    for (int i = 0; i < 4; ++i) kr[i] = s_kr[4 * lane + i];
    float stepc[2], steps[2], wc[2], ws[2], ua[2], ub[2];
#pragma unroll
    for (int p = 0; p < 2; ++p)
    {
        if constexpr (TC)
        {
            // v11: the per-token step and the warp's offset (< 256 positions) in float: the recurrence restarts every
            // chunk from the block's double-precision chunk angles (s_cb, s_sb), so at most 31 steps accumulate.
            const float th = (float)rope_theta(2 * lane + p, a.log2base);
            sincosf(th, &steps[p], &stepc[p]);
            sincosf((float)(warp * (CHUNK / W4)) * th, &ws[p], &wc[p]);
            ua[p] = ub[p] = 0.f;
        }
        else
        {
            double th = rope_theta(2 * lane + p, a.log2base), sn, cs;
            sincos(th, &sn, &cs);
            stepc[p] = (float)cs; steps[p] = (float)sn;
            sincos((double)(warp * (CHUNK / W4)) * th, &sn, &cs);
            wc[p] = (float)cs; ws[p] = (float)sn;
            ua[p] = kr[2 * p] / kr[2 * p + 1] * steps[p];
            ub[p] = kr[2 * p + 1] / kr[2 * p] * steps[p];
        }
    }
    float acc[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;
    // v11: the scaled queries as mma A fragments (rows = query heads, only rows 0 .. G-1 non-zero; k = 16 channels per
    // slice): lane (gr = lane / 4, tq = lane % 4) holds head gr's channels 16 s + 2 tq, +1 (qfr[s][0]) and +8, +9 (qfr[s][1]).
    u32 qfr[TC ? D / 16 : 1][2];
    // v12: O^T (channels x heads) accumulators, one m16n8 tile per 16 channels: lane (gr, tq) holds channels ch(m, gr)
    // = 4 (4 gr + m / 2) + 2 (m % 2) and ch(m, gr) + 1 (rows gr, gr + 8) for heads 2 tq, 2 tq + 1 (columns).
    float acc2[TV ? D / 16 : 1][4];
#pragma unroll
    for (int m = 0; m < (TV ? D / 16 : 1); ++m) acc2[m][0] = acc2[m][1] = acc2[m][2] = acc2[m][3] = 0.f;
    u32 kBase = 0;
    if constexpr (TC)
    {
        static_assert(G <= 8, "the mma rows hold the group's query heads");
        const int gr = lane >> 2, tq = lane & 3;
#pragma unroll
        for (int sl = 0; sl < D / 16; ++sl)
        {
            const int c = 16 * sl + 2 * tq;
            qfr[sl][0] = gr < G ? pack_h2(s_q[gr][c], s_q[gr][c + 1]) : 0u;
            qfr[sl][1] = gr < G ? pack_h2(s_q[gr][c + 8], s_q[gr][c + 9]) : 0u;
        }
        kBase = (u32)__cvta_generic_to_shared(s_k16 + warp * (TILE * D * 2));
    }

    for (int chunk = c0, it = 0; chunk < c1; ++chunk, ++it)
    {
        const long cbase = (long)chunk * CHUNK;
        char* st = s_stage;
        if (threadIdx.x < D / 2)
        {
            s_cb[threadIdx.x] = (float)dc; s_sb[threadIdx.x] = (float)ds;
            double t = dc * stc - ds * sts;
            ds = ds * stc + dc * sts;
            dc = t;
        }
        cp_async_wait_all();
        __syncthreads();
        issue_values<B, KS, VS, KL>(st, hb, cbase, vcodes, vzr, vslotv, vslotc);
        const u32* kc = (const u32*)(st + S::KC);
        const u32* vc = (const u32*)(st + S::VC);
        const int w0 = warp * (CHUNK / W4);

        // ---- scores ----
        float rc[2], rs[2];
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            float cb = s_cb[2 * lane + p], sb = s_sb[2 * lane + p];
            rc[p] = cb * wc[p] - sb * ws[p];
            rs[p] = sb * wc[p] + cb * ws[p];
        }
        float u[4];
        if constexpr (G == 1)
        {
#pragma unroll
            for (int p = 0; p < 2; ++p)
            {
                float qa = qr[0][2 * p], qb = qr[0][2 * p + 1];
                u[2 * p] = (qa * rc[p] + qb * rs[p]) * kr[2 * p];
                u[2 * p + 1] = (qb * rc[p] - qa * rs[p]) * kr[2 * p + 1];
            }
        }
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 kw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) kw[b] = kc[((w0 / TILE + tile) * B + b) * 32 + lane];
            float part[TC ? 1 : TILE * G];
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float k[4];
                if constexpr (KPAIR)
                {
                    float2 k01 = *(const float2*)(s_kt2 + pair_addr<B, 8>(kw, t, 0, kOff));
                    float2 k23 = *(const float2*)(s_kt2 + T::E * 256 + pair_addr<B, 8>(kw, t, 1, kOff));
                    k[0] = k01.x; k[1] = k01.y; k[2] = k23.x; k[3] = k23.y;
                }
                else
                {
#pragma unroll
                    for (int i = 0; i < 4; ++i) k[i] = *(const float*)((const char*)&s_kt[i][0][0] + code_addr6<B>(kw, t, i, laneOff));
                }
                if constexpr (G == 1)
                {
                    part[t] = u[0] * k[0] + u[1] * k[1] + u[2] * k[2] + u[3] * k[3];
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float u0 = u[2 * p], u1 = u[2 * p + 1];
                        u[2 * p] = u0 * stepc[p] + u1 * ua[p];
                        u[2 * p + 1] = u1 * stepc[p] - u0 * ub[p];
                    }
                }
                else
                {
                    float r0 = k[0] * rc[0] - k[1] * rs[0], r1 = k[0] * rs[0] + k[1] * rc[0];
                    float r2 = k[2] * rc[1] - k[3] * rs[1], r3 = k[2] * rs[1] + k[3] * rc[1];
                    if constexpr (TC)
                    {
                        // v11: the rotated key (channels 4 lane .. 4 lane + 3) to the warp's f16 tile, row t.
                        *(uint2*)(s_k16 + warp * (TILE * D * 2) + t * 256 + (((lane >> 1) ^ t) << 4) + ((lane & 1) << 3)) =
                            make_uint2(pack_h2(r0, r1), pack_h2(r2, r3));
                    }
                    else
                    {
#pragma unroll
                        for (int g = 0; g < G; ++g) part[t * G + g] = qr[g][0] * r0 + qr[g][1] * r1 + qr[g][2] * r2 + qr[g][3] * r3;
                    }
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        float c = rc[p] * stepc[p] - rs[p] * steps[p];
                        rs[p] = rs[p] * stepc[p] + rc[p] * steps[p];
                        rc[p] = c;
                    }
                }
            }
            if constexpr (TC)
            {
                // v11: scores of the tile's 8 tokens for the group's heads on the tensor cores: S (heads x tokens) =
                // Q (heads x 128) x K^T (128 x 8 tokens), 8 slices of 16 channels, ldmatrix.x4 = two slices.
                __syncwarp();
                float d0[4] = {0.f, 0.f, 0.f, 0.f}, d1[4] = {0.f, 0.f, 0.f, 0.f};
                const u32 row = kBase + (u32)((lane & 7) * 256);
#pragma unroll
                for (int j = 0; j < D / 32; ++j)
                {
                    u32 b0, b1, b2, b3;
                    ldsm_x4(row + (u32)((((4 * j + (lane >> 3)) ^ (lane & 7))) << 4), b0, b1, b2, b3);
                    mma_16816(d0, qfr[2 * j][0], qfr[2 * j][1], b0, b1);
                    mma_16816(d1, qfr[2 * j + 1][0], qfr[2 * j + 1][1], b2, b3);
                }
                const int gr = lane >> 2, tok = w0 + tile * TILE + 2 * (lane & 3);
                if (gr < G)
                    *(float2*)&s_sc[gr][tok] = make_float2(cbase + tok < a.n ? d0[0] + d1[0] : -INFINITY,
                                                           cbase + tok + 1 < a.n ? d0[1] + d1[1] : -INFINITY);
                __syncwarp();
            }
            else
            {
                rs_step<TILE * G, 16>(part, lane);
                constexpr int SH = 5 - Log2<TILE * G>::value;
                if ((lane & ((1 << SH) - 1)) == 0)
                {
                    int idx = lane >> SH, t = idx / G, g = idx % G;
                    s_sc[g][w0 + tile * TILE + t] = cbase + w0 + tile * TILE + t < a.n ? part[0] : -INFINITY;
                }
            }
        }
        __syncwarp();
        if constexpr (KS > 0)
        {
            const u32* ksc = (const u32*)(st + S::KSC);
            const u16* ksv = (const u16*)(st + S::KSV);
            u32 cs4 = ksc[w0 + lane];
            int cnt = cbase + w0 + lane < a.n ? __popc(~__vcmpeq4(cs4, 0xffffffffu)) >> 3 : 0;
            int total, at = warp_prefix(cnt, lane, total);
            for (int k = 0; k < cnt; ++k) s_olist[warp][at + k] = (u8)((lane << 2) | k);
            __syncwarp();
            for (int e = lane; e < total; e += 32)
            {
                int ent = s_olist[warp][e], tt = w0 + (ent >> 2), sl = ent & 3;
                int c = (ksc[tt] >> (8 * sl)) & 0xff;
                float d = h2f(ksv[tt * KS + sl]) - fmaf(s_kr[c], s_kcb[code_at<B>(kc, tt, c)], s_kz[c]);
                float so, co;
                sincosf((float)tt * s_th[c >> 1], &so, &co);
                float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                float cs = cb * co - sb * so, sn = sb * co + cb * so;
                int c0e = c & ~1;
                float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
            }
        }
        if constexpr (KL > 0)
        {
            const u32* rec = (const u32*)(st + S::KLR);
            const int total = (int)rec[0];
            for (int e = lane; e < total; e += 32)
            {
                u32 ent = rec[1 + e];
                int tt = (ent >> 8) & 0xff, c = ent & 0xff;
                if (tt < w0 || tt >= w0 + CHUNK / W4) continue;
                float d = h2f(ent >> 16) - fmaf(s_kr[c], s_kcb[code_at<B>(kc, tt, c)], s_kz[c]);
                float so, co;
                sincosf((float)tt * s_th[c >> 1], &so, &co);
                float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                float cs = cb * co - sb * so, sn = sb * co + cb * so;
                int c0e = c & ~1;
                float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                for (int g = 0; g < G; ++g) atomicAdd(&s_sc[g][tt], s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1);
            }
        }
        cp_async_wait_all();
        __syncthreads();
        if (chunk + 1 < c1) issue_keys<B, KS, KL>(st, hb, cbase + CHUNK, kcodes, kslotv, kslotc);

        // ---- softmax, value scales folded in ----
        const u32* zr = (const u32*)(st + S::VZR);
        if constexpr (WS)
        {
            // v8: every warp runs its own online softmax over its own 32 tokens (one per lane) and keeps its own
            // max and sums, like a split of its own; the warps merge once at the end. No block barrier between the
            // softmax and the values, and no phase where one warp per head works while the others wait.
            const u32 z = zr[w0 + lane];
            const float zz = h2f(z & 0xffff), zrng = h2f(z >> 16);
            float alpha0 = 1.f, alpha1 = 1.f;   // v12: the factors of this lane's two mma columns (heads 2 tq, 2 tq + 1)
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                const float v = s_sc[g][w0 + lane];
                float cm = v;
#pragma unroll
                for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
                const float mn = fmaxf(wm[g], cm);
                const float alpha = mn == -INFINITY ? 1.f : __expf(wm[g] - mn);
                const float p = mn == -INFINITY ? 0.f : __expf(v - mn);
                s_sc[g][w0 + lane] = p;
                s_pr[g][w0 + lane] = p * zrng;
                float sum = p, pz = p * zz;
#pragma unroll
                for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
                wm[g] = mn; wl[g] = wl[g] * alpha + sum; wpz[g] = wpz[g] * alpha + pz;
#pragma unroll
                for (int i = 0; i < 4; ++i) { acc[g][i] *= alpha; s_vout[warp][g][4 * lane + i] *= alpha; }
                if constexpr (TV)
                {
                    if (g == 2 * (lane & 3)) alpha0 = alpha;
                    if (g == 2 * (lane & 3) + 1) alpha1 = alpha;
                }
            }
            if constexpr (TV)
            {
#pragma unroll
                for (int m = 0; m < D / 16; ++m) { acc2[m][0] *= alpha0; acc2[m][1] *= alpha1; acc2[m][2] *= alpha0; acc2[m][3] *= alpha1; }
            }
            __syncwarp();
        }
        else
        for (int g = warp; g < G; g += W4)
        {
            float v[CHUNK / 32];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j) { v[j] = s_sc[g][lane + 32 * j]; cm = fmaxf(cm, v[j]); }
#pragma unroll
            for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
            float mo = s_m[g], mn = fmaxf(mo, cm);
            float alpha = mn == -INFINITY ? 1.f : __expf(mo - mn);
            float sum = 0.f, pz = 0.f;
#pragma unroll
            for (int j = 0; j < CHUNK / 32; ++j)
            {
                float p = mn == -INFINITY ? 0.f : __expf(v[j] - mn);
                u32 z = zr[lane + 32 * j];
                s_sc[g][lane + 32 * j] = p;
                s_pr[g][lane + 32 * j] = p * h2f(z >> 16);
                sum += p;
                pz = fmaf(p, h2f(z & 0xffff), pz);
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
            __syncwarp();
            if (lane == 0) { s_m[g] = mn; s_l[g] = s_l[g] * alpha + sum; s_alpha[g] = alpha; s_pz[g] = s_pz[g] * alpha + pz; }
        }
        if constexpr (!WS)
        {
            __syncthreads();
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float al = s_alpha[g];
#pragma unroll
                for (int i = 0; i < 4; ++i) { acc[g][i] *= al; s_vout[warp][g][4 * lane + i] *= al; }
            }
        }

        // ---- values: two codes per lookup ----
        if constexpr (TV)
        {
            // v12: O^T += V^T (16 channels x 8 tokens) x (p x range)^T (8 tokens x heads), per code tile and 16-channel
            // slice two tf32 mmas (level hi and lo parts). Lane (gr, tq) decodes tokens tq and tq + 4 of source lanes
            // 4 gr .. 4 gr + 3 (one 16-byte shared load per token and word).
            const int gr = lane >> 2, tq = lane & 3;
            const char* const vt = (const char*)&s_vhl[0][0];
#pragma unroll
            for (int tile = 0; tile < TPW4; ++tile)
            {
                const int stt = w0 + tile * TILE;
                const u32 pb0 = gr < G ? tf32r(s_pr[gr < G ? gr : 0][stt + tq]) : 0u;
                const u32 pb1 = gr < G ? tf32r(s_pr[gr < G ? gr : 0][stt + tq + 4]) : 0u;
                const u32* base = vc + (w0 / TILE + tile) * B * 32 + 4 * gr;
                u32 f[2][4];
#pragma unroll
                for (int hh = 0; hh < 2; ++hh)
                {
                    const int o = 4 * (tq + 4 * hh) * B, wi = o >> 5, bi = o & 31;
                    const uint4 w = *(const uint4*)(base + wi * 32);
                    if constexpr (B == 3)
                    {
                        const uint4 x = *(const uint4*)(base + min(wi + 1, B - 1) * 32);
                        f[hh][0] = __funnelshift_r(w.x, x.x, bi); f[hh][1] = __funnelshift_r(w.y, x.y, bi);
                        f[hh][2] = __funnelshift_r(w.z, x.z, bi); f[hh][3] = __funnelshift_r(w.w, x.w, bi);
                    }
                    else
                    {
                        f[hh][0] = w.x >> bi; f[hh][1] = w.y >> bi; f[hh][2] = w.z >> bi; f[hh][3] = w.w >> bi;
                    }
                }
#pragma unroll
                for (int l = 0; l < 4; ++l)
#pragma unroll
                    for (int p = 0; p < 2; ++p)
                    {
                        const float2 e00 = *(const float2*)(vt + vcode_addr<B>(f[0][l], 2 * p, vOff8));
                        const float2 e01 = *(const float2*)(vt + vcode_addr<B>(f[0][l], 2 * p + 1, vOff8));
                        const float2 e10 = *(const float2*)(vt + vcode_addr<B>(f[1][l], 2 * p, vOff8));
                        const float2 e11 = *(const float2*)(vt + vcode_addr<B>(f[1][l], 2 * p + 1, vOff8));
                        mma_1688(acc2[2 * l + p], __float_as_uint(e00.y), __float_as_uint(e01.y), __float_as_uint(e10.y), __float_as_uint(e11.y), pb0, pb1);
                        mma_1688(acc2[2 * l + p], __float_as_uint(e00.x), __float_as_uint(e01.x), __float_as_uint(e10.x), __float_as_uint(e11.x), pb0, pb1);
                    }
            }
        }
        else
        {
#pragma unroll
        for (int tile = 0; tile < TPW4; ++tile)
        {
            u32 vw[B];
#pragma unroll
            for (int b = 0; b < B; ++b) vw[b] = vc[((w0 / TILE + tile) * B + b) * 32 + lane];
            const int stt = w0 + tile * TILE;
            float pr[G][TILE];
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float4 a0 = *(const float4*)&s_pr[g][stt], a1 = *(const float4*)&s_pr[g][stt + 4];
                pr[g][0] = a0.x; pr[g][1] = a0.y; pr[g][2] = a0.z; pr[g][3] = a0.w;
                pr[g][4] = a1.x; pr[g][5] = a1.y; pr[g][6] = a1.z; pr[g][7] = a1.w;
            }
#pragma unroll
            for (int t = 0; t < TILE; ++t)
            {
                float l0, l1, l2, l3;
                if constexpr (VR > 0)
                {
                    const float2 v01 = *(const float2*)(s_vt2 + pair_addr<B, T::VSH>(vw, t, 0, vOff));
                    const float2 v23 = *(const float2*)(s_vt2 + pair_addr<B, T::VSH>(vw, t, 1, vOff));
                    l0 = v01.x; l1 = v01.y; l2 = v23.x; l3 = v23.y;
                }
                else
                {
                    const char* vt = (const char*)&s_vt[0][0];
                    l0 = *(const float*)(vt + code_addr6<B>(vw, t, 0, laneOff)); l1 = *(const float*)(vt + code_addr6<B>(vw, t, 1, laneOff));
                    l2 = *(const float*)(vt + code_addr6<B>(vw, t, 2, laneOff)); l3 = *(const float*)(vt + code_addr6<B>(vw, t, 3, laneOff));
                }
#pragma unroll
                for (int g = 0; g < G; ++g)
                {
                    acc[g][0] = fmaf(pr[g][t], l0, acc[g][0]); acc[g][1] = fmaf(pr[g][t], l1, acc[g][1]);
                    acc[g][2] = fmaf(pr[g][t], l2, acc[g][2]); acc[g][3] = fmaf(pr[g][t], l3, acc[g][3]);
                }
            }
        }
        }
        __syncwarp();
        if constexpr (VS > 0)
        {
            const int tt = w0 + lane;
            if (cbase + tt < a.n)
            {
                u32 cc = *(const u16*)(st + S::VSC + tt * VS);
                u32 vv = *(const u32*)(st + S::VSV + tt * VS * 2);
                u32 zrt = zr[tt];
                float z = h2f(zrt & 0xffff), r = h2f(zrt >> 16);
#pragma unroll
                for (int sl = 0; sl < VS; ++sl)
                {
                    int c = (cc >> (8 * sl)) & 0xff;
                    float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[code_at<B>(vc, tt, c)], z);
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_vout[warp][g][c], s_sc[g][tt] * d);
                }
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 4; ++i) s_vout[warp][g][4 * lane + i] += acc[g][i];
    if constexpr (TV)
    {
        __syncwarp();
        const int gr = lane >> 2, tq = lane & 3;
        if (2 * tq < G)
#pragma unroll
            for (int m = 0; m < D / 16; ++m)
            {
                const int c = 4 * (4 * gr + m / 2) + 2 * (m % 2);
                s_vout[warp][2 * tq][c] += acc2[m][0]; s_vout[warp][2 * tq + 1][c] += acc2[m][1];
                s_vout[warp][2 * tq][c + 1] += acc2[m][2]; s_vout[warp][2 * tq + 1][c + 1] += acc2[m][3];
            }
    }
    if constexpr (WS)
    {
        if (lane == 0)
#pragma unroll
            for (int g = 0; g < G; ++g) { s_wm[warp][g] = wm[g]; s_wl[warp][g] = wl[g]; s_wpz[warp][g] = wpz[g]; }
        __syncthreads();
        // Merge the warps as attn_reduce merges splits: rescale each to the largest max (a warp that saw only masked
        // tokens has max -inf and weight 0).
        for (int i = threadIdx.x; i < G * D; i += T4)
        {
            int g = i / D, c = i % D;
            float M = -INFINITY;
#pragma unroll
            for (int w = 0; w < W4; ++w) M = fmaxf(M, s_wm[w][g]);
            float v = 0.f, l = 0.f;
#pragma unroll
            for (int w = 0; w < W4; ++w)
            {
                float f = s_wm[w][g] == -INFINITY ? 0.f : __expf(s_wm[w][g] - M);
                v += f * (s_vout[w][g][c] + s_wpz[w][g]);
                l += f * s_wl[w][g];
            }
            part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
            if (c == 0) part_ml[(long)(h * G + g) * a.splits + split] = make_float2(M, l);
        }
        return;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += T4)
    {
        int g = i / D, c = i % D;
        float v = s_pz[g];
#pragma unroll
        for (int w = 0; w < W4; ++w) v += s_vout[w][g][c];
        part_acc[((long)(h * G + g) * a.splits + split) * D + c] = v;
    }
    if (threadIdx.x < G) part_ml[(long)(h * G + threadIdx.x) * a.splits + split] = make_float2(s_m[threadIdx.x], s_l[threadIdx.x]);
}

#define NUQ_V7_ANY(B, G, MINB, VER, SUFFIX, KS, VS, KL) \
extern "C" __global__ void __launch_bounds__(T4, MINB) attn_nuq_k##B##_v##B##_g##G##_r##VER##SUFFIX(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v7<B, G, KS, VS, KL, (VER >= 8), kpair7(B, VER), vrep7(B, VER), (VER >= 11 && G > 1), (VER >= 12 && G > 1)>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }
#define NUQ_V7_LAYOUTS(B, G, MINB, VER) NUQ_V7_ANY(B, G, MINB, VER, , KSLOTS, VSLOTS, 0) NUQ_V7_ANY(B, G, MINB, VER, _dense, 0, 0, 0) \
    NUQ_V7_ANY(B, G, MINB, VER, _sparse, 0, 0, 48)
// Version 8 = v7 with the warp-local online softmax (attn_v7's WS: each warp a split of its own, merged at the end).
#define NUQ_V7(B, G, MINB) NUQ_V7_LAYOUTS(B, G, MINB, 7) NUQ_V7_LAYOUTS(B, G, MINB, 8)
// Versions 9 and 10 = v8 with smaller tables (kpair7, vrep7) so that MHA keeps 3 blocks per SM.
#define NUQ_V9(B) NUQ_V7_LAYOUTS(B, 1, 3, 9) NUQ_V7_LAYOUTS(B, 4, 2, 9)

#define NUQ_ENTRY(KB, VB, G, VER, MINB) \
extern "C" __global__ void __launch_bounds__(THREADS, MINB) attn_nuq_k##KB##_v##VB##_g##G##_r##VER(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_split<KB, VB, G, VER>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, nullptr, nullptr, part_acc, part_ml, padded); }

#define F16_ENTRY(G) \
extern "C" __global__ void __launch_bounds__(THREADS) attn_f16_g##G(const AttnArgs a, const float* q, const u16* k, const u16* v, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_split<16, 16, G, 1>(a, q, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, k, v, part_acc, part_ml, padded); }

#define NUQ_V3(B, G, MINB) \
extern "C" __global__ void __launch_bounds__(THREADS, MINB) attn_nuq_k##B##_v##B##_g##G##_r3(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_v3<B, G>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }

#define NUQ_VERSIONS(B) \
NUQ_ENTRY(B, B, 1, 1, 1) NUQ_ENTRY(B, B, 4, 1, 1) NUQ_ENTRY(B, B, 1, 2, 4) NUQ_ENTRY(B, B, 4, 2, 3) NUQ_V3(B, 1, 4) NUQ_V3(B, 4, 3) NUQ_V4(B, 1, 2) NUQ_V4(B, 4, 1) NUQ_V5(B, 1, 3) NUQ_V5(B, 4, 2) NUQ_V6(B, 1, 3) NUQ_V6(B, 4, 2) \
NUQ_V6_DENSE(B, 1, 3) NUQ_V6_DENSE(B, 4, 2) NUQ_V6_SPARSE(B, 1, 3) NUQ_V6_SPARSE(B, 4, 2)

NUQ_VERSIONS(4)
NUQ_VERSIONS(3)
NUQ_VERSIONS(2)
// v7: the tables take 4-32 KB more shared memory (Tabs7), hence 2 blocks per SM except 2-bit MHA.
NUQ_V7(4, 1, 2) NUQ_V7(4, 4, 2) NUQ_V7(3, 1, 2) NUQ_V7(3, 4, 2) NUQ_V7(2, 1, 3) NUQ_V7(2, 4, 2)
NUQ_V9(4) NUQ_V9(3) NUQ_V9(2) NUQ_V7_LAYOUTS(4, 1, 3, 10) NUQ_V7_LAYOUTS(4, 4, 2, 10)
// Version 11 = v9 with the GQA group's scores on the tensor cores (G > 1 only: DecodeKernels runs v9 for MHA).
// Versions 11 and 12 did not win (H100 run 29, 32q/8kv at 128k, nuq4-1%: v9 306.9 us, v11 303.2, v12 356.1): v9's
// scores were not what bounds it, and v12's 32 accumulators pushed 128-register threads into 176-232 B of spills.
#define NUQ_V11(B) NUQ_V7_LAYOUTS(B, 4, 2, 11)
NUQ_V11(4) NUQ_V11(3) NUQ_V11(2)
// Version 12 = v11 with the group's P x V on the tensor cores too (G > 1 only, as v11).
NUQ_V7_LAYOUTS(4, 4, 2, 12) NUQ_V7_LAYOUTS(3, 4, 2, 12) NUQ_V7_LAYOUTS(2, 4, 2, 12)
F16_ENTRY(1)
F16_ENTRY(4)
