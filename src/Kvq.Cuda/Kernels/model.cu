// Forward pass of a Llama-family decoder on the device (CudaTransformer): embedding rows, RMSNorm, RoPE, SwiGLU,
// residual adds, f32 -> f16 conversion, and causal attention over the model's f16 KV cache (post-RoPE keys, as the
// CPU f16 cache stores them). The matrix products are cuBLAS. Arithmetic follows the CPU Transformer's order with
// explicit _rn operations (no FMA contraction where the CPU has none), so the two agree to f32 rounding.
//
// Row layouts are the CPU's: activations [token][width] row-major; the KV cache [KV head][slot][head dim] f16.

typedef unsigned int u32;
typedef unsigned short u16;
#define FULL 0xffffffffu
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float s = lane < warps ? part[lane] : 0.0f;
    return warp_sum(s);
}

// x[t] = table[ids[t]] (f16 or f32 table [vocab][dim]). Grid: n blocks.
extern "C" __global__ void embed_rows(const void* table, int f16, const int* ids, int dim, float* x)
{
    long row = ids[blockIdx.x];
    float* dst = x + (long)blockIdx.x * dim;
    if (f16) for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = h2f(((const u16*)table)[row * dim + i]);
    else for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = ((const float*)table)[row * dim + i];
}

// y = x / sqrt(mean(x^2) + eps) * w per row (the CPU's (x * scale) * w), to f32 y and/or f16 yh. Grid: rows.
extern "C" __global__ void rmsnorm_rows(const float* x, const float* w, int dim, float eps, float* y, u16* yh)
{
    const float* xr = x + (long)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = __fadd_rn(ss, __fmul_rn(xr[i], xr[i]));
    ss = block_sum(ss);
    float scale = __frcp_rn(__fsqrt_rn(__fadd_rn(__fdiv_rn(ss, (float)dim), eps)));
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
    {
        float v = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
        if (y) y[(long)blockIdx.x * dim + i] = v;
        if (yh) yh[(long)blockIdx.x * dim + i] = f2h(v);
    }
}

extern "C" __global__ void to_f16(const float* x, u16* y, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f2h(x[i]);
}

// x[i] += y[i]
extern "C" __global__ void add_inplace(float* x, const float* y, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fadd_rn(x[i], y[i]);
}

// x[t][i] += b[i] for rows of width w (qwen2's q/k/v biases).
extern "C" __global__ void add_bias_rows(float* x, const float* b, int w, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fadd_rn(x[i], b[i % w]);
}

// gate = silu(gate) * up, as the CPU: g / (1 + exp(-g)) * up.
extern "C" __global__ void swiglu(float* gate, const float* up, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    gate[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
}

// RoPE angle of pair i at a position, by the CPU's float recurrence: theta = pos / scale, then * thetaScale per pair.
__device__ __forceinline__ void rope_angle(long pos, float scale, float thetaScale, int i, float& c, float& s)
{
    float theta = __fdiv_rn((float)pos, scale);
    for (int k = 0; k < i; ++k) theta = __fmul_rn(theta, thetaScale);
    sincosf(theta, &s, &c);
}

// The rotated value of channel ch of one head vector x (head dim hd, ropeDims rotated, adjacent pairs or NeoX halves).
__device__ __forceinline__ float rope_channel(const float* x, int ch, int ropeDims, int neox, long pos, float scale, float thetaScale)
{
    if (ch >= ropeDims) return x[ch];
    int half = ropeDims >> 1;
    int i, ia, ib;
    if (neox) { i = ch < half ? ch : ch - half; ia = i; ib = i + half; }
    else { i = ch >> 1; ia = 2 * i; ib = 2 * i + 1; }
    float c, s;
    rope_angle(pos, scale, thetaScale, i, c, s);
    float a = x[ia], b = x[ib];
    return ch == ia ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)) : __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

// Rotates rows [n][heads][hd] in place at positions pos0 + t. Grid: n * heads blocks of hd threads.
extern "C" __global__ void rope_rows(float* x, int heads, int hd, int ropeDims, int neox, long pos0, float scale, float thetaScale)
{
    int t = blockIdx.x / heads;
    float* row = x + (long)blockIdx.x * hd;
    int ch = threadIdx.x;
    float r = ch < hd ? rope_channel(row, ch, ropeDims, neox, pos0 + t, scale, thetaScale) : 0.0f;
    __syncthreads();
    if (ch < hd) row[ch] = r;
}

// Appends n tokens' keys (rotated at positions pos0 + t, then rounded to f16, as the CPU f16 cache) and values to
// slots slot0 + t of the f16 cache [kvHeads][cap][hd]. k, v: [n][kvHeads][hd]. Grid: n * kvHeads blocks of hd threads.
extern "C" __global__ void kv_append_f16(const float* k, const float* v, int kvHeads, int hd, int ropeDims, int neox,
    long pos0, long slot0, long cap, float scale, float thetaScale, u16* kc, u16* vc)
{
    int t = blockIdx.x / kvHeads, h = blockIdx.x % kvHeads, ch = threadIdx.x;
    if (ch >= hd) return;
    const float* kr = k + (long)blockIdx.x * hd;
    long dst = ((long)h * cap + slot0 + t) * hd + ch;
    kc[dst] = f2h(rope_channel(kr, ch, ropeDims, neox, pos0 + t, scale, thetaScale));
    vc[dst] = f2h(v[(long)blockIdx.x * hd + ch]);
}

// ---------------------------------------------------------------------------------------------------------------
// Causal attention over the f16 cache, split-K (flash-decoding style): block (split, KV head, query token t) takes
// the group's G query rows of token t and the stored tokens [split * per, (split + 1) * per) that t may see
// (count - n + t + 1 of them), 128 at a time: a thread per token for the scores (G dots), online softmax per query
// head, then threads on (head, channel) outputs for the value sum. It writes the unnormalised partial (acc, m, l);
// attn_merge combines the splits. Decode is n = 1; a prefill chunk is n query tokens (each block re-reads its range,
// fine for the model path's sizes; a tiled tensor-core prefill would share key tiles between query rows).
#define AT 128

template <int D, int G>
__device__ __forceinline__ void attn_f16_part(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
    long cap, int kvHeads, long count, int n, long per, int splits, float scale, float* __restrict__ part)
{
    constexpr int group = G, OUTS = (G * D + AT - 1) / AT;
    __shared__ float sq[G][D];
    __shared__ float sp[G][AT];
    __shared__ float sm[G], sl[G], sa[G];
    const int split = blockIdx.x, h = blockIdx.y, t = blockIdx.z, tid = threadIdx.x;
    const int heads = kvHeads * group;
    const long visible = count - n + t + 1;
    const long s0 = (long)split * per, s1 = min(s0 + per, visible);
    for (int i = tid; i < group * D; i += AT)
    {
        int g = i / D, c = i % D;
        sq[g][c] = __fmul_rn(q[((long)t * heads + h * group + g) * D + c], scale);
    }
    if (tid < group) { sm[tid] = -INFINITY; sl[tid] = 0.0f; }
    const int outs = group * D;                 // outputs (g, c) of this block, threads take tid, tid + AT, ...
    float acc[OUTS];
#pragma unroll
    for (int k = 0; k < OUTS; ++k) acc[k] = 0.0f;
    const u16* kh = kc + (long)h * cap * D;
    const u16* vh = vc + (long)h * cap * D;
    __syncthreads();
    for (long base = s0; base < s1; base += AT)
    {
        int cnt = (int)min((long)AT, s1 - base);
        // Scores: thread tid takes token base + tid.
        if (tid < cnt)
        {
            const uint4* kr = (const uint4*)(kh + (base + tid) * D);
            float dot[G];
#pragma unroll
            for (int g = 0; g < G; ++g) dot[g] = 0.0f;
#pragma unroll 4
            for (int c8 = 0; c8 < D / 8; ++c8)
            {
                uint4 w = kr[c8];
                u32 ws[4] = { w.x, w.y, w.z, w.w };
                float kf[8];
#pragma unroll
                for (int j = 0; j < 4; ++j) { kf[2 * j] = h2f((u16)(ws[j] & 0xffff)); kf[2 * j + 1] = h2f((u16)(ws[j] >> 16)); }
#pragma unroll
                for (int g = 0; g < G; ++g)
#pragma unroll
                    for (int j = 0; j < 8; ++j) dot[g] = fmaf(sq[g][c8 * 8 + j], kf[j], dot[g]);
            }
#pragma unroll
            for (int g = 0; g < G; ++g) sp[g][tid] = dot[g];
        }
        __syncthreads();
        // Online softmax: warp w takes query heads w, w + 4, ...
        int warp = tid >> 5, lane = tid & 31;
        for (int g = warp; g < group; g += AT / 32)
        {
            float mx = -INFINITY;
            for (int j = lane; j < cnt; j += 32) mx = fmaxf(mx, sp[g][j]);
            mx = fmaxf(warp_max(mx), sm[g]);
            float sum = 0.0f;
            for (int j = lane; j < cnt; j += 32) { float p = expf(sp[g][j] - mx); sp[g][j] = p; sum += p; }
            sum = warp_sum(sum);
            if (lane == 0)
            {
                float a = sm[g] == -INFINITY ? 0.0f : expf(sm[g] - mx);
                sa[g] = a;
                sl[g] = sl[g] * a + sum;
                sm[g] = mx;
            }
        }
        __syncthreads();
        // Values: output (g, c) = acc * alpha + sum_j p_j v_j[c].
#pragma unroll
        for (int k = 0; k < OUTS; ++k)
        {
            int o = tid + k * AT;
            if (o >= outs) break;
            int g = o / D, c = o % D;
            float a = acc[k] * sa[g];
            const u16* vcol = vh + base * D + c;
            for (int j = 0; j < cnt; ++j) a = fmaf(sp[g][j], h2f(vcol[(long)j * D]), a);
            acc[k] = a;
        }
        __syncthreads();
    }
    // Partial state [t][query head][split][D + 2]: acc, then m and l.
#pragma unroll
    for (int k = 0; k < OUTS; ++k)
    {
        int o = tid + k * AT;
        if (o >= outs) break;
        int g = o / D, c = o % D;
        part[(((long)t * heads + h * group + g) * splits + split) * (D + 2) + c] = acc[k];
    }
    if (tid < group)
    {
        float* st = part + (((long)t * heads + h * group + tid) * splits + split) * (D + 2);
        st[D] = sm[tid];
        st[D + 1] = sl[tid];
    }
}

// attn_f16_d{D}_g{G}: head dim 64 or 128, G query heads per KV head (1..8).
#define ATTN_F16(D, G) \
extern "C" __global__ void __launch_bounds__(AT) attn_f16_d##D##_g##G(const float* q, const u16* kc, const u16* vc, long cap, \
    int kvHeads, long count, int n, long per, int splits, float scale, float* part) \
{ attn_f16_part<D, G>(q, kc, vc, cap, kvHeads, count, n, per, splits, scale, part); }
#define ATTN_F16_D(D) ATTN_F16(D, 1) ATTN_F16(D, 2) ATTN_F16(D, 3) ATTN_F16(D, 4) ATTN_F16(D, 5) ATTN_F16(D, 6) ATTN_F16(D, 7) ATTN_F16(D, 8)
ATTN_F16_D(64)
ATTN_F16_D(128)

// out[t][head][c] = sum_s acc_s[c] e^(m_s - M) / sum_s l_s e^(m_s - M). Grid: n * heads blocks of hd threads.
extern "C" __global__ void attn_merge(const float* part, int splits, int hd, float* out)
{
    const float* st = part + (long)blockIdx.x * splits * (hd + 2);
    float mx = -INFINITY;
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, st[s * (hd + 2) + hd]);
    float l = 0.0f, a = 0.0f;
    int c = threadIdx.x;
    for (int s = 0; s < splits; ++s)
    {
        const float* p = st + s * (hd + 2);
        if (p[hd + 1] == 0.0f) continue;          // a split past the causal limit: nothing seen
        float f = expf(p[hd] - mx);
        l += p[hd + 1] * f;
        if (c < hd) a += p[c] * f;
    }
    if (c < hd) out[(long)blockIdx.x * hd + c] = a / l;
}
