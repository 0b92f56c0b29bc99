// The first decode kernel (attn_split): the f16 cache's kernel in production (attn_f16_g*) and nuq versions 1 and 2
// in the kernel lab. Also the chunk softmax it shares between both cache kinds.
#ifndef KVQ_ATTN_SPLIT_CUH
#define KVQ_ATTN_SPLIT_CUH

#include "decode_common.cuh"

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

#endif
