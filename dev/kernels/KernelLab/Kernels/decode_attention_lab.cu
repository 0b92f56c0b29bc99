// The kernel lab's decode-attention versions: every nuq version that production does not run (1-8 and 10-18;
// production runs 9, src/Kvq.Cuda/Kernels/decode_attention.cu), kept to time and check against the CPU reference
// (dev/kernels/README.md lists what each one changed and what it measured). Loaded only by the lab
// (KernelLab's DecodeKernelVersions: KernelLab, Kvq.Cuda.Tests); the f16 kernels, version 9 and attn_reduce come
// from the production module. The layout and the shared code are in src/Kvq.Cuda/Kernels (decode_attention.cu's
// comment, the .cuh headers KernelLoader hands NVRTC).

#include "attn_split.cuh"
#include "attn_v7.cuh"

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

// Version 8 = v7 with the warp-local online softmax (attn_v7's WS: each warp a split of its own, merged at the end).
#define NUQ_V7(B, G, MINB) NUQ_V7_LAYOUTS(B, G, MINB, 7) NUQ_V7_LAYOUTS(B, G, MINB, 8)

#define NUQ_ENTRY(KB, VB, G, VER, MINB) \
extern "C" __global__ void __launch_bounds__(THREADS, MINB) attn_nuq_k##KB##_v##VB##_g##G##_r##VER(const AttnArgs a, const float* q, \
    const u32* kcodes, const u16* kslotv, const u8* kslotc, const float* kzero, const float* krange, const float* kcb, \
    const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc, const float* vcb, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_split<KB, VB, G, VER>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, nullptr, nullptr, part_acc, part_ml, padded); }

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
NUQ_V7_LAYOUTS(4, 1, 3, 10) NUQ_V7_LAYOUTS(4, 4, 2, 10)
// Version 11 = v9 with the GQA group's scores on the tensor cores (G > 1 only: DecodeKernels runs v9 for MHA).
// Versions 11 and 12 did not win (H100 run 29, 32q/8kv at 128k, nuq4-1%: v9 306.9 us, v11 303.2, v12 356.1): v9's
// scores were not what bounds it, and v12's 32 accumulators pushed 128-register threads into 176-232 B of spills.
#define NUQ_V11(B) NUQ_V7_LAYOUTS(B, 4, 2, 11)
NUQ_V11(4) NUQ_V11(3) NUQ_V11(2)
// Version 12 = v11 with the group's P x V on the tensor cores too (G > 1 only, as v11).
NUQ_V7_LAYOUTS(4, 4, 2, 12) NUQ_V7_LAYOUTS(3, 4, 2, 12) NUQ_V7_LAYOUTS(2, 4, 2, 12)
// Version 13 = v11 with P x V on the tensor cores in f16 (G > 1 only): whole values (zero + range x level) decoded into
// a 16-token f16 tile per warp, ldmatrix.trans, m16n8k16; no per-head value FMAs and no level hi/lo split (v12).
// Version 14 = v13 compiled for 3 blocks per SM (at most 85 registers a thread) instead of 2.
NUQ_V7_LAYOUTS(4, 4, 2, 13) NUQ_V7_LAYOUTS(3, 4, 2, 13) NUQ_V7_LAYOUTS(2, 4, 2, 13)
NUQ_V7_LAYOUTS(4, 4, 3, 14) NUQ_V7_LAYOUTS(3, 4, 3, 14) NUQ_V7_LAYOUTS(2, 4, 3, 14)
// Version 15 = v11's keys and P x V on the tensor cores with the value operands made in registers: 4-bit codes become
// f16 levels by byte permutes (attn_v7.cuh, lut16_word; no shared-memory lookups, no f16 value tile). 4 bits only.
NUQ_V7_LAYOUTS(4, 4, 2, 15)
// Version 16 = v15 with the keys as tensor-core A operands made by prmt too (attn_v7.cuh, "v16"): levels from the
// layer's key codebook in f16 byte planes, each rotated key pair two f16x2 FMAs with a per-block table of RoPE offset
// x range x zero per pair (the warp's own position goes to the query, once per chunk). 4 bits, G = 4 only.
NUQ_V7_LAYOUTS(4, 4, 2, 16)
// Version 17 = v16 with fewer shared-memory wavefronts (run 38: v16's shared pipe ~70% busy, 36% of its wavefronts
// bank-conflict excess, MIO stalls the top reason): the rotated query's B registers swizzled per slice, the query and
// the value-outlier sums read and rescaled 16 bytes a lane, no rescaling before a warp's first live token. 4 bits, G = 4.
NUQ_V7_LAYOUTS(4, 4, 2, 17)
// Version 18 = v17 with one 16-offset key table (12 KB instead of 24) shared by both halves of a warp's 32 tokens:
// each table entry is loaded once per slice for two tokens 16 apart, the mma's B columns 4-7 (zero in v16/v17) hold
// the group's heads rotated by the second half's position. Half the key-table loads (run 39's ncu: latency-bound,
// MIO stalls at 2 blocks per SM). 4 bits, G = 4.
NUQ_V7_LAYOUTS(4, 4, 2, 18)
