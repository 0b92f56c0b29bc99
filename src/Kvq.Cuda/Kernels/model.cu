// Forward pass of a Llama-family decoder on the device (CudaTransformer): embedding rows, RMSNorm, RoPE, SwiGLU,
// residual adds, f32 -> f16 conversion, and causal attention over the model's f16 KV cache (post-RoPE keys, as the
// CPU f16 cache stores them). The matrix products are cuBLAS. Arithmetic follows the CPU Transformer's order with
// explicit _rn operations (no FMA contraction where the CPU has none), so the two agree to f32 rounding.
//
// Row layouts are the CPU's: activations [token][width] row-major; the KV cache [KV head][slot][head dim] f16.

#include "common.cuh"

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

// Paged caches: a sequence's token j lives in physical slot bt[j / PB] * PB + j % PB of the pool (per KV head).
// PB is a multiple of every tile (128 tokens in the per-token kernels, 64 in the prefill tiles), so a tile never
// straddles two blocks and its first token's slot gives the rest.
#define PB 128
__device__ __forceinline__ long phys(const int* bt, long j) { return (long)bt[j >> 7] * PB + (j & (PB - 1)); }

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

// y = x / sqrt(mean(x^2) + eps) * w for one row xr (the CPU's (x * scale) * w), to row `out` of f32 y and/or f16 yh.
__device__ __forceinline__ void rmsnorm_row(const float* xr, const float* w, int dim, float eps, long out, float* y, u16* yh)
{
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = __fadd_rn(ss, __fmul_rn(xr[i], xr[i]));
    ss = block_sum(ss);
    float scale = __frcp_rn(__fsqrt_rn(__fadd_rn(__fdiv_rn(ss, (float)dim), eps)));
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
    {
        float v = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
        if (y) y[out * dim + i] = v;
        if (yh) yh[out * dim + i] = f2h(v);
    }
}

// RMSNorm per row, to f32 y and/or f16 yh (0 = skip). Grid: rows.
extern "C" __global__ void rmsnorm_rows(const float* x, const float* w, int dim, float eps, float* y, u16* yh)
{
    rmsnorm_row(x + (long)blockIdx.x * dim, w, dim, eps, blockIdx.x, y, yh);
}

// x += r, then RMSNorm per row as rmsnorm_rows: the residual add and the next norm in one launch (the same values as
// add_inplace then rmsnorm_rows: each thread adds the channels it then reads). Grid: rows.
extern "C" __global__ void add_rmsnorm_rows(float* x, const float* r, const float* w, int dim, float eps, float* y, u16* yh)
{
    float* xr = x + (long)blockIdx.x * dim;
    const float* rr = r + (long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] = __fadd_rn(xr[i], rr[i]);
    __syncthreads();
    rmsnorm_row(xr, w, dim, eps, blockIdx.x, y, yh);
}

// RMSNorm of the rows rows[i] of x, to rows i of y / yh (a batch's last rows, for its logits). Grid: count.
extern "C" __global__ void rmsnorm_gather(const float* x, const int* rows, const float* w, int dim, float eps, float* y, u16* yh)
{
    rmsnorm_row(x + (long)rows[blockIdx.x] * dim, w, dim, eps, blockIdx.x, y, yh);
}

extern "C" __global__ void to_f16(const float* x, u16* y, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f2h(x[i]);
}

// Products of one row for a decode step with f16 weights (CudaTransformer.Layers, one token): y = W x, W f16
// [rows][cols] (cols a multiple of 8), f32 sums, with the element-wise work next to the product in the same launch:
// the input x is staged as f16 in shared memory by every block, as
//   GEMV_F16IN:  the f16 row in (an attention output the merge wrote in f16);
//   GEMV_NORM:   f16(rmsnorm(in) * nw), rmsnorm_row's values (256 threads, as rmsnorm_rows), in the residual stream;
//   GEMV_SWIGLU: f16(silu(in) * in2), swiglu_f16's values (gate and up).
// residual: y[r] += the sum (the residual stream, each row owned by one warp) instead of y[r] = the sum.
// Each warp takes rpw consecutive rows, 16-byte loads of the weights (8 halves a lane). Grid: ceil(rows / (8 rpw))
// blocks of 256 threads, cols * 2 bytes of dynamic shared memory.
#define GEMV_F16IN 0
#define GEMV_NORM 1
#define GEMV_SWIGLU 2
extern "C" __global__ void __launch_bounds__(256) gemv_f16(const u16* __restrict__ W, int rows, int cols, int rpw, int mode,
    const void* in, const float* in2, const float* nw, float eps, float* y, int residual)
{
    extern __shared__ __align__(16) u16 sx[];
    if (mode == GEMV_NORM) rmsnorm_row((const float*)in, nw, cols, eps, 0, nullptr, sx);
    else if (mode == GEMV_SWIGLU)
        for (int i = threadIdx.x; i < cols; i += blockDim.x)
        {
            float g = ((const float*)in)[i];
            sx[i] = f2h(__fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), in2[i]));
        }
    else for (int i = threadIdx.x; i < cols; i += blockDim.x) sx[i] = ((const u16*)in)[i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c8s = cols >> 3;
    const int r0 = (blockIdx.x * (blockDim.x >> 5) + warp) * rpw, r1 = min(r0 + rpw, rows);
    const uint4* xs = (const uint4*)sx;
    for (int r = r0; r < r1; ++r)
    {
        const uint4* wr = (const uint4*)(W + (long)r * cols);
        float acc = 0.0f;
#pragma unroll 4
        for (int c8 = lane; c8 < c8s; c8 += 32)
        {
            uint4 w = wr[c8], x = xs[c8];
            u32 ws[4] = { w.x, w.y, w.z, w.w }, xv[4] = { x.x, x.y, x.z, x.w };
#pragma unroll
            for (int j = 0; j < 4; ++j)
            {
                acc = fmaf(h2f((u16)(ws[j] & 0xffff)), h2f((u16)(xv[j] & 0xffff)), acc);
                acc = fmaf(h2f((u16)(ws[j] >> 16)), h2f((u16)(xv[j] >> 16)), acc);
            }
        }
        acc = warp_sum(acc);
        if (lane == 0) y[r] = residual ? __fadd_rn(y[r], acc) : acc;
    }
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

// swiglu then to_f16 in one launch (f16 weights: the down projection takes f16): gh = f16(silu(gate) * up).
extern "C" __global__ void swiglu_f16(const float* gate, const float* up, u16* gh, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    gh[i] = f2h(__fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]));
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

// Rotates rows [n][heads][hd] in place, row t at its own position pos[t] (a batch of several sequences). Grid: n * heads
// blocks of hd threads.
extern "C" __global__ void rope_rows_at(float* x, int heads, int hd, int ropeDims, int neox, const int* pos, float scale, float thetaScale)
{
    int t = blockIdx.x / heads;
    float* row = x + (long)blockIdx.x * hd;
    int ch = threadIdx.x;
    float r = ch < hd ? rope_channel(row, ch, ropeDims, neox, pos[t], scale, thetaScale) : 0.0f;
    __syncthreads();
    if (ch < hd) row[ch] = r;
}

// A decode step replayed from a CUDA graph (Model/DecodeStep.cs) reads what changes per token from device ints that
// one copy updates before each launch: at[STEP_QPOS] the query's position, at[STEP_KPOS] the new key's position, at[STEP_SLOT] its slot, at[STEP_COUNT]
// the tokens attention sees. at == nullptr: the launch's own arguments (every other launch).
#define STEP_QPOS 1
#define STEP_KPOS 2
#define STEP_SLOT 3
#define STEP_COUNT 4

// A batched decode step (CudaTransformer.ForwardBatch, Model/DecodeRows.cs): one launch serves the decode rows of many
// sequences, row r reading its own sequence's block table, slot, positions, visible tokens, split length and sink
// copies here (48 bytes; the host struct must match), and tok, the row's index in the step's activations (its q, k, v
// and output rows). rows == nullptr: the launch's own arguments.
struct DecodeRow
{
    const int* bt; u16* sinkK; u16* sinkV;
    int count, per, slot, kpos, qpos, tok;
};

// Appends n tokens' keys (rotated at positions pos0 + t, then rounded to f16, as the CPU f16 cache) and values to
// slots slot0 + t (through the block table) of the f16 cache [kvHeads][cap][hd]. k, v: [n][kvHeads][hd]. Grid: n * kvHeads blocks of hd threads.
// With q (the chunk's queries [n][kvHeads * group][hd]), block (t, h) also rotates the group's query rows of token t in
// place at position qpos0 + t (at[STEP_QPOS] from a graph): rope_rows's arithmetic, one launch fewer per layer.
extern "C" __global__ void kv_append_f16(const float* k, const float* v, int kvHeads, int hd, int ropeDims, int neox,
    long pos0, long slot0, long cap, float scale, float thetaScale, u16* kc, u16* vc, const int* bt, const int* at,
    float* q, int group, long qpos0, const DecodeRow* rows)
{
    if (at) { pos0 = at[STEP_KPOS]; slot0 = at[STEP_SLOT]; qpos0 = at[STEP_QPOS]; }
    int t = blockIdx.x / kvHeads, h = blockIdx.x % kvHeads, ch = threadIdx.x;
    long at_row = blockIdx.x;                   // (token, KV head) row of k, v; its group's query rows follow from it
    if (rows)
    {
        const DecodeRow& r = rows[t];           // launch row t: token 0 of its own sequence, at row r.tok of the step
        bt = r.bt; pos0 = r.kpos; slot0 = r.slot; qpos0 = r.qpos; t = 0;
        at_row = (long)r.tok * kvHeads + h;
    }
    if (ch < hd)
    {
        const float* kr = k + at_row * hd;
        long dst = ((long)h * cap + phys(bt, slot0 + t)) * hd + ch;
        kc[dst] = f2h(rope_channel(kr, ch, ropeDims, neox, pos0 + t, scale, thetaScale));
        vc[dst] = f2h(v[at_row * hd + ch]);
    }
    if (!q) return;
    for (int g = 0; g < group; ++g)
    {
        float* row = q + (at_row * group + g) * hd;
        float r = ch < hd ? rope_channel(row, ch, ropeDims, neox, qpos0 + t, scale, thetaScale) : 0.0f;
        __syncthreads();
        if (ch < hd) row[ch] = r;
    }
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
    long cap, int kvHeads, long count, int n, long per, int splits, float scale, float* __restrict__ part, const int* __restrict__ bt, int t)
{
    constexpr int group = G, OUTS = (G * D + AT - 1) / AT;
    __shared__ float sq[G][D];
    __shared__ float sp[G][AT];
    __shared__ float sm[G], sl[G], sa[G];
    const int split = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
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
        const long pb = phys(bt, base);           // the tile's first physical slot (a tile is one block)
        // Scores: thread tid takes token base + tid.
        if (tid < cnt)
        {
            const uint4* kr = (const uint4*)(kh + (pb + tid) * D);
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
            const u16* vcol = vh + pb * D + c;
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

// Row t of a batched decode launch (rows != nullptr) is the one query token of its own sequence: its query and partial
// states sit at row t of the launch's arrays, the rest (table, visible tokens, split length, sinks) comes from rows[t].
#define DECODE_ROW_ARGS(G, D) \
    const DecodeRow& r = rows[t]; \
    q += (long)r.tok * kvHeads * (G) * (D); \
    part += (long)t * kvHeads * (G) * splits * ((D) + 2); \
    bt = r.bt; count = r.count; per = r.per; n = 1; t = 0

// attn_f16_d{D}_g{G}: head dim 64 or 128, G query heads per KV head (1..8).
#define ATTN_F16(D, G) \
extern "C" __global__ void __launch_bounds__(AT) attn_f16_d##D##_g##G(const float* q, const u16* kc, const u16* vc, long cap, \
    int kvHeads, long count, int n, long per, int splits, float scale, float* part, const int* bt, const int* at, const DecodeRow* rows) \
{ \
    int t = blockIdx.z; \
    if (at) count = at[STEP_COUNT]; \
    if (rows) { DECODE_ROW_ARGS(G, D); } \
    attn_f16_part<D, G>(q, kc, vc, cap, kvHeads, count, n, per, splits, scale, part, bt, t); \
}
#define ATTN_F16_D(D) ATTN_F16(D, 1) ATTN_F16(D, 2) ATTN_F16(D, 3) ATTN_F16(D, 4) ATTN_F16(D, 5) ATTN_F16(D, 6) ATTN_F16(D, 7) ATTN_F16(D, 8)
ATTN_F16_D(64)
ATTN_F16_D(128)

// out[t][head][c] = sum_s acc_s[c] e^(m_s - M) / sum_s l_s e^(m_s - M). Grid: n * heads blocks of hd threads.
// outh (optional): the same output rounded to f16 (to_f16's rounding), the input of an f16 output projection. rows
// (a batched decode launch): partial row r goes to the step's row rows[r].tok (heads query heads a row).
extern "C" __global__ void attn_merge(const float* part, int splits, int hd, float* out, u16* outh, const DecodeRow* rows, int heads)
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
    if (c < hd)
    {
        float o = a / l;
        long at = rows ? (long)rows[blockIdx.x / heads].tok * heads + blockIdx.x % heads : (long)blockIdx.x;
        out[at * hd + c] = o;
        if (outh) outh[at * hd + c] = f2h(o);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// KVQuant cache of the model path (any head dim up to 128, any bit width 1..4 per layer, :mixed included): the CPU
// codecs' math (NuqChannelCodec pre-RoPE keys, NuqTokenCodec values), a layout of the device's own, per layer:
//   key codes   u32 [KV head][slot][kw], channel c at bit c * B (LSB first, the CPU's packing), kw = ceil(D B / 32) (one spare word
//               after the last row: a code is read as a 64-bit window)
//   key slots   u16 value + u8 channel (0xFF empty) [KV head][slot][S]: the S largest |u| > 1, in channel order
//   value codes u32 [KV head][slot][vw]; value zero | range << 16 (f16) [KV head][slot]
//   value slots u16 + u8 [KV head][slot][2k]: the k largest and k smallest values, in channel order
//   sink        f16 pre-RoPE keys and values of positions < sink, [KV head][sink][D], read instead of codes
// plus per sequence a table of (cos, sin) per position and RoPE pair (the CPU's float recurrence), filled as tokens
// arrive, from which attention rotates the decoded pre-RoPE keys.

__device__ __forceinline__ int code_at(const u32* row, int c, int bits, u32 mask)
{
    int b = c * bits;
    unsigned long long w = row[b >> 5] | ((unsigned long long)row[(b >> 5) + 1] << 32);
    return (int)((w >> (b & 31)) & mask);
}

// Packs codes[0..D) of B bits into kw words (lane-strided), as NuqBits.Pack.
__device__ __forceinline__ void pack_codes(const unsigned char* codes, int D, int bits, int kw, u32* dst, int lane)
{
    for (int w = lane; w < kw; w += 32)
    {
        u32 word = 0;
        int lo = 32 * w;
        for (int c = 0; c < D; ++c)
        {
            int b = c * bits;
            if (b + bits <= lo || b >= lo + 32) continue;
            u32 cv = codes[c];
            int sh = b - lo;
            word |= sh >= 0 ? cv << sh : cv >> (-sh);
        }
        dst[w] = word;
    }
}

__device__ __forceinline__ float clamp_half(float x) { return fminf(fmaxf(x, -65504.0f), 65504.0f); }

// The sequence's angle table, rows of (cos, sin) per RoPE pair: rows 0..127 for positions 0..127 ("lo"), row
// 128 + k for position 128 k ("hi"); attention rotates position 128 k + r by hi[k] * lo[r] (angle addition), so the
// table stays small and hot in cache instead of a row per position. Each row by the CPU's float recurrence.
// Grid: rows blocks of >= half threads.
extern "C" __global__ void rope_table(int half, float scale, float thetaScale, float* table)
{
    int i = threadIdx.x;
    if (i >= half) return;
    long row = blockIdx.x, pos = row < 128 ? row : (row - 128) * 128;
    float c, s;
    rope_angle(pos, scale, thetaScale, i, c, s);
    table[(row * half + i) * 2] = c;
    table[(row * half + i) * 2 + 1] = s;
}

// (cos, sin) of position 128 k + r for pair i: lo[r][i] times the tile's hi[k][i] (in shared memory).
__device__ __forceinline__ float2 rot_at(const float2* lo, const float2* shi, int r, int i, int half)
{
    float2 a = lo[r * half + i], b = shi[i];
    return make_float2(a.x * b.x - a.y * b.y, a.y * b.x + a.x * b.y);
}

// Keys of n tokens [n][kvHeads][D] (pre-RoPE) into slots slot0 + t. One warp per (token, KV head).
extern "C" __global__ void __launch_bounds__(32) nuq_append_keys(const float* k, int kvHeads, int D, long slot0, long cap, int bits,
    int S, const float* kzero, const float* krange, const float* kmids, int nmids, u32* codes, u16* slotv, unsigned char* slotc,
    int sink, u16* sinkK, const int* bt, const int* at, const DecodeRow* rows)
{
    __shared__ float su[128], smag[128];
    __shared__ unsigned char scode[128], skeep[128];
    __shared__ short scand[128];
    int t = blockIdx.x / kvHeads, h = blockIdx.x % kvHeads, lane = threadIdx.x;
    long slot = (at ? (long)at[STEP_SLOT] : slot0) + t;
    const float* x = k + (long)blockIdx.x * D;
    if (rows) { const DecodeRow& r = rows[t]; bt = r.bt; slot = r.slot; sinkK = r.sinkK; x = k + ((long)r.tok * kvHeads + h) * D; }
    for (int c = lane; c < D; c += 32)
    {
        float u = __fdiv_rn(__fsub_rn(x[c], kzero[h * D + c]), krange[h * D + c]);
        int code = 0;
        for (int i = 0; i < nmids; ++i) code += u > kmids[h * 16 + i] ? 1 : 0;
        su[c] = u;
        scode[c] = (unsigned char)code;   // outliers too: a clamped one decodes to its extreme level
        if (slot < sink) sinkK[((long)h * sink + slot) * D + c] = f2h(x[c]);
    }
    __syncwarp();
    int kw = (D * bits + 31) / 32;
    const long ps = phys(bt, slot);
    pack_codes(scode, D, bits, kw, codes + ((long)h * cap + ps) * kw, lane);
    if (S == 0 || lane != 0) return;
    // Outlier slots: every |u| > 1 when they fit, else the S largest |u| (ties to the lower channel), in channel order.
    u16* sv = slotv + ((long)h * cap + ps) * S;
    unsigned char* sc = slotc + ((long)h * cap + ps) * S;
    int n = 0;
    for (int c = 0; c < D; ++c)
        if (su[c] > 1.0f || su[c] < -1.0f) { scand[n] = (short)c; smag[n] = fabsf(su[c]); skeep[n] = n < S; ++n; }
    if (n > S)
    {
        for (int i = 0; i < n; ++i) skeep[i] = 0;
        for (int r = 0; r < S; ++r)
        {
            int best = -1;
            for (int i = 0; i < n; ++i)
                if (!skeep[i] && (best < 0 || smag[i] > smag[best])) best = i;
            skeep[best] = 1;
        }
    }
    int w = 0;
    for (int i = 0; i < n; ++i)
        if (skeep[i]) { sv[w] = f2h(clamp_half(x[scand[i]])); sc[w] = (unsigned char)scand[i]; ++w; }
    for (; w < S; ++w) { sv[w] = 0; sc[w] = 0xFF; }
}

// Values of n tokens [n][kvHeads][D] into slots slot0 + t: k largest and k smallest kept exactly, f16 zero and
// range from the rest, codes of (x - zero) / range. One warp per (token, KV head).
extern "C" __global__ void __launch_bounds__(32) nuq_append_values(const float* v, int kvHeads, int D, long slot0, long cap, int bits,
    int K, const float* vmids, int nmids, u32* codes, u32* vzr, u16* slotv, unsigned char* slotc, int sink, u16* sinkV, const int* bt,
    const int* at, const DecodeRow* rows)
{
    __shared__ unsigned char sout[128], scode[128];
    __shared__ float szr[2];
    int t = blockIdx.x / kvHeads, h = blockIdx.x % kvHeads, lane = threadIdx.x;
    long slot = (at ? (long)at[STEP_SLOT] : slot0) + t;
    const float* x = v + (long)blockIdx.x * D;
    if (rows) { const DecodeRow& r = rows[t]; bt = r.bt; slot = r.slot; sinkV = r.sinkV; x = v + ((long)r.tok * kvHeads + h) * D; }
    const long ps = phys(bt, slot);
    if (lane == 0)
    {
        for (int c = 0; c < D; ++c) sout[c] = 0;
        for (int j = 0; j < K; ++j)
        {
            int best = -1;
            for (int c = 0; c < D; ++c) if (!sout[c] && (best < 0 || x[c] > x[best])) best = c;
            sout[best] = 1;
        }
        for (int j = 0; j < K; ++j)
        {
            int best = -1;
            for (int c = 0; c < D; ++c) if (!sout[c] && (best < 0 || x[c] < x[best])) best = c;
            sout[best] = 1;
        }
        float mn = INFINITY, mx = -INFINITY;
        u16* sv = slotv + ((long)h * cap + ps) * 2 * K;
        unsigned char* sc = slotc + ((long)h * cap + ps) * 2 * K;
        int w = 0;
        for (int c = 0; c < D; ++c)
        {
            if (sout[c]) { sv[w] = f2h(clamp_half(x[c])); sc[w] = (unsigned char)c; ++w; continue; }
            mn = fminf(mn, x[c]);
            mx = fmaxf(mx, x[c]);
        }
        u16 zh = f2h(clamp_half(__fmul_rn(__fadd_rn(mx, mn), 0.5f)));
        u16 rh = f2h(fminf(__fmul_rn(__fsub_rn(mx, mn), 0.5f), 65504.0f));
        vzr[(long)h * cap + ps] = (u32)zh | ((u32)rh << 16);
        szr[0] = h2f(zh);
        szr[1] = h2f(rh);
    }
    __syncwarp();
    float zero = szr[0], range = szr[1];
    for (int c = lane; c < D; c += 32)
    {
        float u = range > 0.0f ? __fdiv_rn(__fsub_rn(x[c], zero), range) : 0.0f;
        int code = 0;
        for (int i = 0; i < nmids; ++i) code += u > vmids[h * 16 + i] ? 1 : 0;
        scode[c] = (unsigned char)code;
        if (slot < sink) sinkV[((long)h * sink + slot) * D + c] = f2h(x[c]);
    }
    __syncwarp();
    int vw = (D * bits + 31) / 32;
    pack_codes(scode, D, bits, vw, codes + ((long)h * cap + ps) * vw, lane);
}

// Offload (Offload/OffloadedKvSequence): per KV head its own chosen blocks. stride 0: none (the sequence's table bt
// serves every head, count is the call's). Else head h reads bt[h * stride + i] (the physical block of its i-th chosen
// block), pos[h * stride + i] (that block's index in the sequence: its RoPE angles and sink test) and count[h] tokens.
struct HeadBlocks
{
    const int* pos; const int* count; long stride;
};

struct NuqLayer
{
    const u32* kcodes; const u16* kslotv; const unsigned char* kslotc; const float* kzero; const float* krange; const float* klev;
    const u32* vcodes;
};

// Causal attention over the KVQuant cache: as attn_f16_part (split-K, thread per token for scores, (head, channel)
// threads for values), decoding codes in place: keys = zero_c + range_c * level[code] with outliers as sparse
// corrections (delta times the rotated query's component), rotated by the position's (cos, sin); values = token
// zero + range * level[code], outlier slots overriding; sink tokens from their f16 copies.
template <int D, int G>
__device__ __forceinline__ void attn_nuq_part(const float* __restrict__ q, const NuqLayer L,
    const u32* __restrict__ vzr, const u16* __restrict__ vslotv, const unsigned char* __restrict__ vslotc, const float* __restrict__ vlev,
    const u16* __restrict__ sinkK, const u16* __restrict__ sinkV, const float2* __restrict__ table,
    long cap, int kvHeads, long count, int n, long per, int splits, float scale, float* __restrict__ part,
    int kbits, int vbits, int S, int VS, int sink, int ropeDims, int neox, const int* __restrict__ bt, const HeadBlocks hb, int t)
{
    constexpr int TPC = AT / D;                 // token lanes per value channel (2 at D = 64, 1 at D = 128)
    __shared__ float sq[G][D];
    __shared__ float sred[G][D];
    __shared__ float sp[G][AT];
    __shared__ float sm[G], sl[G], sa[G];
    __shared__ float skz[D], skr[D], sklev[16], svlev[16], svz[AT], svr[AT];
    __shared__ float2 shi[D / 2];
    const int split = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int heads = kvHeads * G, half = ropeDims >> 1;
    if (hb.stride) { bt += (long)h * hb.stride; count = hb.count[h]; }   // this KV head's own chosen blocks (offload)
    const long visible = count - n + t + 1;
    const long s0 = (long)split * per, s1 = min(s0 + per, visible);
    const int kw = (D * kbits + 31) / 32, vw = (D * vbits + 31) / 32;
    const u32 kmask = (1u << kbits) - 1, vmask = (1u << vbits) - 1;
    for (int i = tid; i < G * D; i += AT)
    {
        int g = i / D, c = i % D;
        sq[g][c] = __fmul_rn(q[((long)t * heads + h * G + g) * D + c], scale);
    }
    for (int c = tid; c < D; c += AT) { skz[c] = L.kzero[h * D + c]; skr[c] = L.krange[h * D + c]; }
    if (tid < 16) { sklev[tid] = L.klev[h * 16 + tid]; svlev[tid] = vlev[h * 16 + tid]; }
    if (tid < G) { sm[tid] = -INFINITY; sl[tid] = 0.0f; }
    const int vc = tid % D, vpart = tid / D;
    float acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] = 0.0f;
    __syncthreads();
    for (long base = s0; base < s1; base += AT)   // base is a multiple of 128: the tile's positions share one hi row
    {
        int cnt = (int)min((long)AT, s1 - base);
        // The tile's first position: base, or the block's own where the table lists chosen blocks (offload).
        const long rbase = hb.stride ? (long)hb.pos[(long)h * hb.stride + (base >> 7)] * PB : base;
        if (tid < half) shi[tid] = table[(128 + rbase / 128) * half + tid];
        const long pb = phys(bt, base);           // the tile's first physical slot (a tile is one block)
        __syncthreads();
        if (tid < cnt)
        {
            long j = rbase + tid, pj = pb + tid;
            float dot[G];
#pragma unroll
            for (int g = 0; g < G; ++g) dot[g] = 0.0f;
            if (j < sink)
            {
                const u16* kr = sinkK + ((long)h * sink + j) * D;
                for (int i = 0; i < half; ++i)
                {
                    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                    float ka = h2f(kr[a]), kb = h2f(kr[b]);
                    float2 r = rot_at(table, shi, tid, i, half);
                    float ra = __fsub_rn(__fmul_rn(ka, r.x), __fmul_rn(kb, r.y)), rb = __fadd_rn(__fmul_rn(ka, r.y), __fmul_rn(kb, r.x));
#pragma unroll
                    for (int g = 0; g < G; ++g) dot[g] = fmaf(sq[g][a], ra, fmaf(sq[g][b], rb, dot[g]));
                }
                for (int c = ropeDims; c < D; ++c)
                {
                    float kc = h2f(kr[c]);
#pragma unroll
                    for (int g = 0; g < G; ++g) dot[g] = fmaf(sq[g][c], kc, dot[g]);
                }
            }
            else
            {
                const u32* cw = L.kcodes + ((long)h * cap + pj) * kw;
                for (int i = 0; i < half; ++i)
                {
                    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                    float ka = __fadd_rn(skz[a], __fmul_rn(skr[a], sklev[code_at(cw, a, kbits, kmask)]));
                    float kb = __fadd_rn(skz[b], __fmul_rn(skr[b], sklev[code_at(cw, b, kbits, kmask)]));
                    float2 r = rot_at(table, shi, tid, i, half);
                    float ra = __fsub_rn(__fmul_rn(ka, r.x), __fmul_rn(kb, r.y)), rb = __fadd_rn(__fmul_rn(ka, r.y), __fmul_rn(kb, r.x));
#pragma unroll
                    for (int g = 0; g < G; ++g) dot[g] = fmaf(sq[g][a], ra, fmaf(sq[g][b], rb, dot[g]));
                }
                for (int c = ropeDims; c < D; ++c)
                {
                    float kc = __fadd_rn(skz[c], __fmul_rn(skr[c], sklev[code_at(cw, c, kbits, kmask)]));
#pragma unroll
                    for (int g = 0; g < G; ++g) dot[g] = fmaf(sq[g][c], kc, dot[g]);
                }
                // Outliers: the exact value replaces the clamped one; its rotated contribution is added as a delta.
                for (int s = 0; s < S; ++s)
                {
                    int idx = L.kslotc[((long)h * cap + pj) * S + s];
                    if (idx == 0xFF) continue;
                    float dense = __fadd_rn(skz[idx], __fmul_rn(skr[idx], sklev[code_at(cw, idx, kbits, kmask)]));
                    float delta = h2f(L.kslotv[((long)h * cap + pj) * S + s]) - dense;
                    if (idx >= ropeDims)
                    {
#pragma unroll
                        for (int g = 0; g < G; ++g) dot[g] = fmaf(sq[g][idx], delta, dot[g]);
                        continue;
                    }
                    int i = neox ? (idx < half ? idx : idx - half) : idx >> 1;
                    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                    float2 r = rot_at(table, shi, tid, i, half);
#pragma unroll
                    for (int g = 0; g < G; ++g)
                    {
                        float w = idx == a ? sq[g][a] * r.x + sq[g][b] * r.y : sq[g][b] * r.x - sq[g][a] * r.y;
                        dot[g] = fmaf(delta, w, dot[g]);
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < G; ++g) sp[g][tid] = dot[g];
            u32 zr = vzr[(long)h * cap + pj];
            svz[tid] = h2f((u16)(zr & 0xffff));
            svr[tid] = h2f((u16)(zr >> 16));
        }
        __syncthreads();
        int warp = tid >> 5, lane = tid & 31;
        for (int g = warp; g < G; g += AT / 32)
        {
            float mx = -INFINITY;
            for (int j = lane; j < cnt; j += 32) mx = fmaxf(mx, sp[g][j]);
            mx = fmaxf(warp_max(mx), sm[g]);
            float sum = 0.0f;
            for (int j = lane; j < cnt; j += 32) { float p = expf(sp[g][j] - mx); sp[g][j] = p; sum += p; }
            sum = warp_sum(sum);
            if (lane == 0)
            {
                float al = sm[g] == -INFINITY ? 0.0f : expf(sm[g] - mx);
                sa[g] = al;
                sl[g] = sl[g] * al + sum;
                sm[g] = mx;
            }
        }
        __syncthreads();
        // Values: thread (part, c) decodes channel c of tokens part, part + TPC, ... once for all G query heads.
#pragma unroll
        for (int g = 0; g < G; ++g) acc[g] *= sa[g];
        for (int jj = vpart; jj < cnt; jj += TPC)
        {
            long j = rbase + jj, pj = pb + jj;
            float vv;
            if (j < sink) vv = h2f(sinkV[((long)h * sink + j) * D + vc]);
            else
            {
                vv = __fadd_rn(svz[jj], __fmul_rn(svr[jj], svlev[code_at(L.vcodes + ((long)h * cap + pj) * vw, vc, vbits, vmask)]));
                const unsigned char* sc = vslotc + ((long)h * cap + pj) * VS;
                for (int s = 0; s < VS; ++s)
                    if (sc[s] == vc) vv = h2f(vslotv[((long)h * cap + pj) * VS + s]);
            }
#pragma unroll
            for (int g = 0; g < G; ++g) acc[g] = fmaf(sp[g][jj], vv, acc[g]);
        }
        __syncthreads();
    }
    // Partial state [t][query head][split][D + 2]: the TPC token lanes of each channel summed, then m and l.
    for (int pp = TPC - 1; pp > 0; --pp)
    {
        if (vpart == pp)
#pragma unroll
            for (int g = 0; g < G; ++g) sred[g][vc] = pp == TPC - 1 ? acc[g] : sred[g][vc] + acc[g];
        __syncthreads();
    }
    if (vpart == 0)
#pragma unroll
        for (int g = 0; g < G; ++g)
            part[(((long)t * heads + h * G + g) * splits + split) * (D + 2) + vc] = TPC > 1 ? acc[g] + sred[g][vc] : acc[g];
    if (tid < G)
    {
        float* st = part + (((long)t * heads + h * G + tid) * splits + split) * (D + 2);
        st[D] = sm[tid];
        st[D + 1] = sl[tid];
    }
}

// attn_nuq_d{D}_g{G}: the layer's key arrays in a struct (kernel parameter space), the rest as arguments.
#define ATTN_NUQ(D, G) \
extern "C" __global__ void __launch_bounds__(AT) attn_nuq_d##D##_g##G(const float* q, const NuqLayer L, const u32* vzr, \
    const u16* vslotv, const unsigned char* vslotc, const float* vlev, const u16* sinkK, const u16* sinkV, const float* table, \
    long cap, int kvHeads, long count, int n, long per, int splits, float scale, float* part, \
    int kbits, int vbits, int S, int VS, int sink, int ropeDims, int neox, const int* bt, const HeadBlocks hb, const int* at, \
    const DecodeRow* rows) \
{ \
    int t = blockIdx.z; \
    if (at) count = at[STEP_COUNT]; \
    if (rows) { DECODE_ROW_ARGS(G, D); sinkK = r.sinkK; sinkV = r.sinkV; } \
    attn_nuq_part<D, G>(q, L, vzr, vslotv, vslotc, vlev, sinkK, sinkV, (const float2*)table, cap, kvHeads, count, n, per, splits, \
    scale, part, kbits, vbits, S, VS, sink, ropeDims, neox, bt, hb, t); \
}
#define ATTN_NUQ_D(D) ATTN_NUQ(D, 1) ATTN_NUQ(D, 2) ATTN_NUQ(D, 3) ATTN_NUQ(D, 4) ATTN_NUQ(D, 5) ATTN_NUQ(D, 6) ATTN_NUQ(D, 7) ATTN_NUQ(D, 8)
ATTN_NUQ_D(64)
ATTN_NUQ_D(128)

// ---------------------------------------------------------------------------------------------------------------
// Tiled causal attention for a prefill chunk (flash style, CUDA cores): block (split, KV head, row block) takes RB
// query rows (row = token t * G + g of the chunk) and walks its split of the stored tokens in tiles of KT keys and
// values staged once in shared memory (decoded and rotated there for the KVQuant cache), so every key is read once
// per RB rows instead of once per row. 256 threads: scores by (row, 8 keys), online softmax by the 8 threads of a
// row, values by (row, D / 8 channels). Writes the same partial states as the per-token kernels (attn_merge).
#define RB 32
#define KT 64
#define TT 256

struct TileArgs
{
    // f16 cache
    const u16* kc; const u16* vc;
    // KVQuant cache
    NuqLayer L; const u32* vzr; const u16* vslotv; const unsigned char* vslotc; const float* vlev;
    const u16* sinkK; const u16* sinkV; const float* table;
    int kbits, vbits, S, VS, sink, ropeDims, neox;
    long contigPadded;   // the contiguous KVQuant decode layout (mode 2): stream tokens per KV head in its arrays
    const int* bt;    // block table of a paged cache (modes 0 and 1)
};

// MODE 0: f16 cache; 1: the model's KVQuant layout; 2: the contiguous KVQuant decode layout (NuqLayerCache,
// decode_attention.cu: stream token s = position - sink, codes [KV head][8-token tile][word][lane], lane owns channels
// 4 lane .. 4 lane + 3 at bit (4 t + i) B of its words; slots [KV head][token][S]; one codebook per layer).
template <int D, int MODE>
__device__ __forceinline__ void load_tile(const TileArgs& A, int h, long cap, long base, int cnt, float* sk, float* sv, int tid, int nt = TT)
{
    constexpr int DP = D + 1;
    if (MODE == 2)
    {
        const int B = A.kbits;
        const u32 mask = (1u << B) - 1;
        const long P = A.contigPadded, tiles = P / 8;
        for (int i = tid; i < cnt * D; i += nt)
        {
            int j = i / D, c = i % D;
            long p = base + j;
            float kx, vx;
            if (p < A.sink)
            {
                kx = h2f(A.sinkK[((long)h * A.sink + p) * D + c]);
                vx = h2f(A.sinkV[((long)h * A.sink + p) * D + c]);
            }
            else
            {
                long st = p - A.sink;
                int o = (4 * (int)(st & 7) + (c & 3)) * B, wi = o >> 5, bi = o & 31;
                long at = ((long)h * tiles + (st >> 3)) * B * 32 + (c >> 2);
                const u32* kw = A.L.kcodes + at;
                const u32* vw = A.L.vcodes + at;
                int kcode = bi + B <= 32 ? (int)((kw[wi * 32] >> bi) & mask) : (int)(__funnelshift_r(kw[wi * 32], kw[(wi + 1) * 32], bi) & mask);
                int vcode = bi + B <= 32 ? (int)((vw[wi * 32] >> bi) & mask) : (int)(__funnelshift_r(vw[wi * 32], vw[(wi + 1) * 32], bi) & mask);
                kx = __fadd_rn(A.L.kzero[h * D + c], __fmul_rn(A.L.krange[h * D + c], A.L.klev[kcode]));
                u32 zr = A.vzr[(long)h * P + st];
                vx = __fadd_rn(h2f((u16)(zr & 0xffff)), __fmul_rn(h2f((u16)(zr >> 16)), A.vlev[vcode]));
            }
            sk[j * DP + c] = kx;
            sv[j * D + c] = vx;
        }
        __syncthreads();
        for (int j = tid; j < cnt; j += nt)
        {
            long p = base + j;
            if (p < A.sink) continue;
            long st = p - A.sink;
            for (int s = 0; s < A.S; ++s)
            {
                int idx = A.L.kslotc[((long)h * P + st) * A.S + s];
                if (idx != 0xFF) sk[j * DP + idx] = h2f(A.L.kslotv[((long)h * P + st) * A.S + s]);
            }
            for (int s = 0; s < A.VS; ++s)
                sv[j * D + A.vslotc[((long)h * P + st) * A.VS + s]] = h2f(A.vslotv[((long)h * P + st) * A.VS + s]);
        }
    }
    else if (MODE == 0)
    {
        const long pb = phys(A.bt, base);     // a tile (64 tokens) lies in one block
        for (int i = tid; i < cnt * D; i += nt)
        {
            int j = i / D, c = i % D;
            long src = ((long)h * cap + pb + j) * D + c;
            sk[j * DP + c] = h2f(A.kc[src]);
            sv[j * D + c] = h2f(A.vc[src]);
        }
        return;
    }
    else
    {
    const long pb = phys(A.bt, base);
    const int kw = (D * A.kbits + 31) / 32, vw = (D * A.vbits + 31) / 32;
    const u32 kmask = (1u << A.kbits) - 1, vmask = (1u << A.vbits) - 1;
    // Dense decode (sink tokens from their f16 copies), pre-RoPE keys.
    for (int i = tid; i < cnt * D; i += nt)
    {
        int j = i / D, c = i % D;
        long p = base + j;
        float kx, vx;
        if (p < A.sink)
        {
            kx = h2f(A.sinkK[((long)h * A.sink + p) * D + c]);
            vx = h2f(A.sinkV[((long)h * A.sink + p) * D + c]);
        }
        else
        {
            kx = __fadd_rn(A.L.kzero[h * D + c], __fmul_rn(A.L.krange[h * D + c],
                     A.L.klev[h * 16 + code_at(A.L.kcodes + ((long)h * cap + pb + j) * kw, c, A.kbits, kmask)]));
            u32 zr = A.vzr[(long)h * cap + pb + j];
            vx = __fadd_rn(h2f((u16)(zr & 0xffff)), __fmul_rn(h2f((u16)(zr >> 16)),
                     A.vlev[h * 16 + code_at(A.L.vcodes + ((long)h * cap + pb + j) * vw, c, A.vbits, vmask)]));
        }
        sk[j * DP + c] = kx;
        sv[j * D + c] = vx;
    }
    __syncthreads();
    // Outliers replace their clamped values.
    for (int j = tid; j < cnt; j += nt)
    {
        long p = base + j;
        if (p < A.sink) continue;
        for (int s = 0; s < A.S; ++s)
        {
            int idx = A.L.kslotc[((long)h * cap + pb + j) * A.S + s];
            if (idx != 0xFF) sk[j * DP + idx] = h2f(A.L.kslotv[((long)h * cap + pb + j) * A.S + s]);
        }
        for (int s = 0; s < A.VS; ++s)
            sv[j * D + A.vslotc[((long)h * cap + pb + j) * A.VS + s]] = h2f(A.vslotv[((long)h * cap + pb + j) * A.VS + s]);
    }
    }
    __syncthreads();
    // RoPE at each key's position: (cos, sin) = lo[p % 128] * hi[p / 128] (rope_table).
    const int half = A.ropeDims >> 1;
    const float2* tab = (const float2*)A.table;
    for (int i = tid; i < cnt * half; i += nt)
    {
        int j = i / half, pi = i % half;
        long p = base + j;
        float2 lo = tab[(p & 127) * half + pi], hi = tab[(128 + (p >> 7)) * half + pi];
        float2 r = make_float2(lo.x * hi.x - lo.y * hi.y, lo.y * hi.x + lo.x * hi.y);
        int a = A.neox ? pi : 2 * pi, b = A.neox ? pi + half : 2 * pi + 1;
        float ka = sk[j * DP + a], kb = sk[j * DP + b];
        sk[j * DP + a] = __fsub_rn(__fmul_rn(ka, r.x), __fmul_rn(kb, r.y));
        sk[j * DP + b] = __fadd_rn(__fmul_rn(ka, r.y), __fmul_rn(kb, r.x));
    }
}

template <int D, int MODE>
__device__ __forceinline__ void attn_tile(const float* __restrict__ q, const TileArgs& A, long cap, int kvHeads, int G, long count,
    int n, long per, int splits, float scale, float* __restrict__ part)
{
    constexpr int DP = D + 1, CPT = D / 8;   // channels per thread in the value sum
    extern __shared__ float smem[];
    float* sq = smem;                        // [RB][DP]
    float* sk = sq + RB * DP;                // [KT][DP]
    float* sv = sk + KT * DP;                // [KT][D]
    float* ss = sv + KT * D;                 // [RB][KT]
    __shared__ long slimit[RB];
    const int split = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int heads = kvHeads * G, R = n * G, r0 = blockIdx.z * RB;
    const int rows = min(RB, R - r0);
    for (int i = tid; i < RB * D; i += TT)
    {
        int r = i / D, c = i % D, row = r0 + r;
        float v = 0.0f;
        if (r < rows)
        {
            int t = row / G, g = row % G;
            v = __fmul_rn(q[((long)t * heads + h * G + g) * D + c], scale);
        }
        sq[r * DP + c] = v;
    }
    if (tid < RB) slimit[tid] = tid < rows ? count - n + (r0 + tid) / G + 1 : 0;
    const long s0 = (long)split * per;
    const long s1 = min(s0 + per, count - n + (r0 + rows - 1) / G + 1);
    const int r = tid >> 3, sub = tid & 7;   // this thread's row, and its eighth of the keys / channels
    float m = -INFINITY, l = 0.0f, acc[CPT];
#pragma unroll
    for (int k = 0; k < CPT; ++k) acc[k] = 0.0f;
    __syncthreads();
    const long lim = slimit[r];
    for (long base = s0; base < s1; base += KT)
    {
        int cnt = (int)min((long)KT, s1 - base);
        load_tile<D, MODE>(A, h, cap, base, cnt, sk, sv, tid);
        __syncthreads();
        float sc[KT / 8];
        float mx = -INFINITY;
#pragma unroll
        for (int k = 0; k < KT / 8; ++k)
        {
            int j = sub + 8 * k;
            float d = -INFINITY;
            if (j < cnt && base + j < lim)
            {
                d = 0.0f;
#pragma unroll 8
                for (int c = 0; c < D; ++c) d = fmaf(sq[r * DP + c], sk[j * DP + c], d);
            }
            sc[k] = d;
            mx = fmaxf(mx, d);
        }
        mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
        mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 4));
        float mnew = fmaxf(m, mx), sum = 0.0f;
#pragma unroll
        for (int k = 0; k < KT / 8; ++k)
        {
            float p = sc[k] == -INFINITY ? 0.0f : expf(sc[k] - mnew);
            ss[r * KT + sub + 8 * k] = p;
            sum += p;
        }
        sum += __shfl_xor_sync(FULL, sum, 1);
        sum += __shfl_xor_sync(FULL, sum, 2);
        sum += __shfl_xor_sync(FULL, sum, 4);
        float alpha = m == -INFINITY ? 0.0f : expf(m - mnew);
        if (mnew != -INFINITY) { l = l * alpha + sum; m = mnew; }
        __syncwarp();
#pragma unroll
        for (int k = 0; k < CPT; ++k) acc[k] *= (mnew == -INFINITY ? 1.0f : alpha);
        for (int j = 0; j < cnt; ++j)
        {
            float p = ss[r * KT + j];
#pragma unroll
            for (int k = 0; k < CPT; ++k) acc[k] = fmaf(p, sv[j * D + sub + 8 * k], acc[k]);
        }
        __syncthreads();
    }
    if (r < rows)
    {
        int row = r0 + r, t = row / G, g = row % G;
        float* st = part + (((long)t * heads + h * G + g) * splits + split) * (D + 2);
#pragma unroll
        for (int k = 0; k < CPT; ++k) st[sub + 8 * k] = acc[k];
        if (sub == 0) { st[D] = m; st[D + 1] = l; }
    }
}

#define ATTN_TILE(D, NAME, MODE) \
extern "C" __global__ void __launch_bounds__(TT) attn_tile_##NAME##_d##D(const float* q, const TileArgs A, long cap, int kvHeads, \
    int G, long count, int n, long per, int splits, float scale, float* part) \
{ attn_tile<D, MODE>(q, A, cap, kvHeads, G, count, n, per, splits, scale, part); }
ATTN_TILE(64, f16, 0)
ATTN_TILE(128, f16, 0)
ATTN_TILE(64, nuq, 1)
ATTN_TILE(128, nuq, 1)
ATTN_TILE(128, contig, 2)

// A KVQuant prefill chunk at f16 speed (CudaKvSequence, NuqPrefill.F16Chunk / Decoded): tokens [0, tokens) of a
// KVQuant cache (MODE 1: the model's paged layout; 2: the contiguous decode layout) decoded once per chunk and layer
// into f16 rows laid out as the f16 cache ([KV head][scap][D], post-RoPE keys, slot = token; PrefillScratch), which the
// f16 tensor-core kernel (attn_mma_f16) then reads like any f16 cache. Through load_tile, so the rows are the very f16
// values attn_mma_nuq / attn_mma_contig round their tiles to: decoding once instead of once per block of query rows
// changes no bit. Grid: (ceil(tokens / KT), KV heads) blocks of TT threads; dynamic shared (KT (D + 1) + KT D) floats.
template <int D, int MODE>
__device__ __forceinline__ void nuq_to_f16(const TileArgs& A, long cap, long tokens, long scap, u32* ok, u32* ov)
{
    constexpr int DP = D + 1, H = D / 2;
    extern __shared__ float smem[];
    float* sk = smem;            // [KT][DP]
    float* sv = sk + KT * DP;    // [KT][D]
    const int h = blockIdx.y, tid = threadIdx.x;
    const long base = (long)blockIdx.x * KT;
    if (base >= tokens) return;   // the whole block alike: no barrier is skipped by part of it
    const int cnt = (int)min((long)KT, tokens - base);
    load_tile<D, MODE>(A, h, cap, base, cnt, sk, sv, tid);
    __syncthreads();
    for (int i = tid; i < cnt * H; i += TT)   // two channels a thread: 4-byte stores, a row's 2 D bytes contiguous
    {
        int j = i / H, c = 2 * (i % H);
        long dst = (((long)h * scap + base + j) * D + c) >> 1;
        ok[dst] = (u32)f2h(sk[j * DP + c]) | ((u32)f2h(sk[j * DP + c + 1]) << 16);
        ov[dst] = (u32)f2h(sv[j * D + c]) | ((u32)f2h(sv[j * D + c + 1]) << 16);
    }
}

#define NUQ_TO_F16(D, NAME, MODE) \
extern "C" __global__ void __launch_bounds__(TT) nuq_to_f16_##NAME##_d##D(const TileArgs A, long cap, long tokens, long scap, u32* ok, u32* ov) \
{ nuq_to_f16<D, MODE>(A, cap, tokens, scap, ok, ov); }
NUQ_TO_F16(64, nuq, 1)
NUQ_TO_F16(128, nuq, 1)
NUQ_TO_F16(128, contig, 2)

// Random weights for timing runs (CudaTransformer.CreateRandom): n uniform values in [-scale, scale).
__device__ __forceinline__ u32 hash32(u32 x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x; }
extern "C" __global__ void fill_random(void* p, long n, int f16, u32 seed, float scale)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float u = (float)(hash32(seed ^ hash32((u32)i) ^ hash32((u32)(i >> 32) + 0x68bc21ebu)) >> 8) * (1.0f / 16777216.0f);
    float v = (2.0f * u - 1.0f) * scale;
    if (f16) ((u16*)p)[i] = f2h(v); else ((float*)p)[i] = v;
}

// The contiguous KVQuant decode layout (NuqLayerCache, decode_attention.cu) behind the model: the f16 sink copies of one
// token at position pos < sink (k, v: [kvHeads][D] rows of the chunk). Grid: kvHeads blocks of D threads.
extern "C" __global__ void sink_write(const float* k, const float* v, int D, long pos, int sink, u16* sinkK, u16* sinkV)
{
    int h = blockIdx.x, c = threadIdx.x;
    if (c >= D) return;
    sinkK[((long)h * sink + pos) * D + c] = f2h(k[(long)h * D + c]);
    sinkV[((long)h * sink + pos) * D + c] = f2h(v[(long)h * D + c]);
}

// Attention of position 0 when it is the only token and a sink token: the output is its value (f16 copy).
// Grid: kvHeads * G blocks of D threads.
extern "C" __global__ void sink_only(const u16* sinkV, int G, int D, int sink, float* out)
{
    int qh = blockIdx.x, c = threadIdx.x;
    if (c < D) out[(long)qh * D + c] = h2f(sinkV[((long)(qh / G) * sink) * D + c]);
}


// ---------------------------------------------------------------------------------------------------------------
// Tensor-core prefill attention (the model's fast mode, f16 weights): as attn_tile, with the products on
// mma.sync m16n8k16 (f16 inputs, f32 accumulation), FlashAttention-2 style: 4 warps of 16 query rows each (64 rows per
// block), Q fragments in registers, S = Q K^T and O += P V on tensor cores with the online softmax on the S fragments
// (each thread holds two rows' values), tiles of 64 keys staged in shared memory by load_tile (any cache layout) and
// rounded to f16 there. Query rows are rounded to f16 after scaling: the f32 (exact) mode keeps attn_tile.
#define MR 64

__device__ __forceinline__ u32 pack_h2(float a, float b) { return (u32)f2h(a) | ((u32)f2h(b) << 16); }

__device__ __forceinline__ void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int D, int MODE>
__device__ __forceinline__ void attn_mma(const float* __restrict__ q, const TileArgs& A, long cap, int kvHeads, int G, long count,
    int n, long per, int splits, float scale, float* __restrict__ part)
{
    constexpr int DP = D + 1, KP = D + 8, VP = KT + 8, NT = 128;
    extern __shared__ float smem[];
    float* sk = smem;                        // [KT][DP] f32 (load_tile)
    float* sv = sk + KT * DP;                // [KT][D]  f32
    u16* k16 = (u16*)(sv + KT * D);          // [KT][KP] keys, f16
    u16* vt16 = k16 + KT * KP;               // [D][VP]  values transposed, f16
    u16* q16 = vt16 + D * VP;                // [MR][KP] scaled query rows, f16
    const int split = blockIdx.x, h = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int heads = kvHeads * G, R = n * G, r0 = blockIdx.z * MR, rows = min(MR, R - r0);
    for (int i = tid; i < MR * D; i += NT)
    {
        int r = i / D, c = i % D;
        float v = 0.0f;
        if (r < rows)
        {
            int row = r0 + r, t = row / G, gg = row % G;
            v = __fmul_rn(q[((long)t * heads + h * G + gg) * D + c], scale);
        }
        q16[r * KP + c] = f2h(v);
    }
    __syncthreads();
    u32 qa[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
    {
        int rb = warp * 16;
        qa[ks][0] = *(const u32*)&q16[(rb + g) * KP + ks * 16 + tg * 2];
        qa[ks][1] = *(const u32*)&q16[(rb + g + 8) * KP + ks * 16 + tg * 2];
        qa[ks][2] = *(const u32*)&q16[(rb + g) * KP + ks * 16 + 8 + tg * 2];
        qa[ks][3] = *(const u32*)&q16[(rb + g + 8) * KP + ks * 16 + 8 + tg * 2];
    }
    const int ra = warp * 16 + g, rbw = ra + 8;   // this thread's two rows (block-local)
    const long limA = ra < rows ? count - n + (r0 + ra) / G + 1 : 0;
    const long limB = rbw < rows ? count - n + (r0 + rbw) / G + 1 : 0;
    const long s0 = (long)split * per;
    const long s1 = min(s0 + per, count - n + (r0 + rows - 1) / G + 1);
    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float mA = -INFINITY, mB = -INFINITY, lA = 0.0f, lB = 0.0f;
    for (long base = s0; base < s1; base += KT)
    {
        int cnt = (int)min((long)KT, s1 - base);
        load_tile<D, MODE>(A, h, cap, base, cnt, sk, sv, tid, NT);
        __syncthreads();
        for (int i = tid; i < KT * D; i += NT)
        {
            int j = i / D, c = i % D;
            k16[j * KP + c] = f2h(j < cnt ? sk[j * DP + c] : 0.0f);
            vt16[c * VP + j] = f2h(j < cnt ? sv[j * D + c] : 0.0f);
        }
        __syncthreads();
        float sc[KT / 8][4];
#pragma unroll
        for (int nt = 0; nt < KT / 8; ++nt)
        {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks)
            {
                const u16* kr = k16 + (nt * 8 + g) * KP + ks * 16 + tg * 2;
                mma16816(sc[nt], qa[ks], *(const u32*)kr, *(const u32*)(kr + 8));
            }
        }
        float mxA = -INFINITY, mxB = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < KT / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e)
            {
                int jj = nt * 8 + tg * 2 + e;
                long key = base + jj;
                if (jj >= cnt || key >= limA) sc[nt][e] = -INFINITY;
                if (jj >= cnt || key >= limB) sc[nt][2 + e] = -INFINITY;
                mxA = fmaxf(mxA, sc[nt][e]);
                mxB = fmaxf(mxB, sc[nt][2 + e]);
            }
        mxA = fmaxf(mxA, __shfl_xor_sync(FULL, mxA, 1));
        mxA = fmaxf(mxA, __shfl_xor_sync(FULL, mxA, 2));
        mxB = fmaxf(mxB, __shfl_xor_sync(FULL, mxB, 1));
        mxB = fmaxf(mxB, __shfl_xor_sync(FULL, mxB, 2));
        float nA = fmaxf(mA, mxA), nB = fmaxf(mB, mxB), sumA = 0.0f, sumB = 0.0f;
#pragma unroll
        for (int nt = 0; nt < KT / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e)
            {
                sc[nt][e] = sc[nt][e] == -INFINITY ? 0.0f : expf(sc[nt][e] - nA);
                sc[nt][2 + e] = sc[nt][2 + e] == -INFINITY ? 0.0f : expf(sc[nt][2 + e] - nB);
                sumA += sc[nt][e];
                sumB += sc[nt][2 + e];
            }
        sumA += __shfl_xor_sync(FULL, sumA, 1);
        sumA += __shfl_xor_sync(FULL, sumA, 2);
        sumB += __shfl_xor_sync(FULL, sumB, 1);
        sumB += __shfl_xor_sync(FULL, sumB, 2);
        float aA = nA == -INFINITY ? 1.0f : (mA == -INFINITY ? 0.0f : expf(mA - nA));
        float aB = nB == -INFINITY ? 1.0f : (mB == -INFINITY ? 0.0f : expf(mB - nB));
        if (nA != -INFINITY) { lA = lA * aA + sumA; mA = nA; }
        if (nB != -INFINITY) { lB = lB * aB + sumB; mB = nB; }
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) { o[dt][0] *= aA; o[dt][1] *= aA; o[dt][2] *= aB; o[dt][3] *= aB; }
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk)
        {
            u32 pa[4] = { pack_h2(sc[2 * kk][0], sc[2 * kk][1]), pack_h2(sc[2 * kk][2], sc[2 * kk][3]),
                          pack_h2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]), pack_h2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]) };
#pragma unroll
            for (int dt = 0; dt < D / 8; ++dt)
            {
                const u16* vr = vt16 + (dt * 8 + g) * VP + kk * 16 + tg * 2;
                mma16816(o[dt], pa, *(const u32*)vr, *(const u32*)(vr + 8));
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int half2i = 0; half2i < 2; ++half2i)
    {
        int r = half2i == 0 ? ra : rbw;
        if (r >= rows) continue;
        int row = r0 + r, t = row / G, gg = row % G;
        float* st = part + (((long)t * heads + h * G + gg) * splits + split) * (D + 2);
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt)
        {
            st[dt * 8 + tg * 2] = o[dt][2 * half2i];
            st[dt * 8 + tg * 2 + 1] = o[dt][2 * half2i + 1];
        }
        if (tg == 0) { st[D] = half2i == 0 ? mA : mB; st[D + 1] = half2i == 0 ? lA : lB; }
    }
}

#define ATTN_MMA(D, NAME, MODE) \
extern "C" __global__ void __launch_bounds__(128) attn_mma_##NAME##_d##D(const float* q, const TileArgs A, long cap, int kvHeads, \
    int G, long count, int n, long per, int splits, float scale, float* part) \
{ attn_mma<D, MODE>(q, A, cap, kvHeads, G, count, n, per, splits, scale, part); }
ATTN_MMA(64, f16, 0)
ATTN_MMA(128, f16, 0)
ATTN_MMA(64, nuq, 1)
ATTN_MMA(128, nuq, 1)
ATTN_MMA(128, contig, 2)

// ---------------------------------------------------------------------------------------------------------------
// Offload (Offload/OffloadedKvSequence): per-block key summaries on the device, their scores, and block copies
// between pinned host memory (mapped) and the device.

// f16 rounding toward -inf / +inf: round to nearest, then one step outward where that went the wrong way (f16 bit
// patterns are ordered by magnitude within a sign).
__device__ __forceinline__ u16 f2h_down(float f)
{
    u16 h = f2h(f);
    if (h2f(h) > f) h = (h & 0x8000) ? (u16)(h + 1) : (h == 0 ? (u16)0x8001 : (u16)(h - 1));
    return h;
}

__device__ __forceinline__ u16 f2h_up(float f)
{
    u16 h = f2h(f);
    if (h2f(h) < f) h = (h & 0x8000) ? (h == 0x8000 ? (u16)0x0001 : (u16)(h - 1)) : (u16)(h + 1);
    return h;
}

// Per (KV head, block): the per-channel minimum and maximum of the block's keys AFTER RoPE (the CPU's
// Cache/Offload/BlockSummaries with one box per 128-token block), f16 rounded outward, [h][block][min | max][hd].
// Folds n new pre-RoPE keys k [n][kvHeads][hd] at positions pos0.. in. Grid (blocks touched, KV heads), hd threads.
extern "C" __global__ void offload_summarize(const float* k, int n, int kvHeads, int hd, int ropeDims, int neox, long pos0,
    float scale, float thetaScale, long maxBlocks, u16* sum)
{
    const int h = blockIdx.y, ch = threadIdx.x;
    const long b = pos0 / PB + blockIdx.x, t0 = max(pos0, b * PB), t1 = min(pos0 + n, (b + 1) * PB);
    u16* mn = sum + ((long)h * maxBlocks + b) * 2 * hd;
    u16* mx = mn + hd;
    float lo = INFINITY, hi = -INFINITY;
    if (t0 > b * PB) { lo = h2f(mn[ch]); hi = h2f(mx[ch]); }   // the block was begun by an earlier call
    for (long t = t0; t < t1; ++t)
    {
        float r = rope_channel(k + ((t - pos0) * kvHeads + h) * hd, ch, ropeDims, neox, t, scale, thetaScale);
        lo = fminf(lo, r);
        hi = fmaxf(hi, r);
    }
    mn[ch] = f2h_down(lo);   // rounded outward: the f16 box still holds every key
    mx[ch] = f2h_up(hi);
}

// est[h][b][g] = 0.5 (q.(min + max) + spread |q|.(max - min)), q scaled as attention scores it: the CPU's
// BlockSummaries.RowEstimates for one box per block. Grid (ceil(visible / 8), KV heads), 256 threads: a warp per block.
extern "C" __global__ void offload_score(const float* q, int G, int hd, int kvHeads, long visible, long maxBlocks, const u16* sum,
    float scale, float spread, float* est)
{
    const int h = blockIdx.y, lane = threadIdx.x & 31;
    const long b = (long)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (b >= visible) return;
    const u16* mn = sum + ((long)h * maxBlocks + b) * 2 * hd;
    const u16* mx = mn + hd;
    for (int g = 0; g < G; ++g)
    {
        const float* qr = q + ((long)h * G + g) * hd;
        float c = 0.0f, w = 0.0f;
        for (int i = lane; i < hd; i += 32)
        {
            float qi = qr[i] * scale, lo = h2f(mn[i]), hi = h2f(mx[i]);
            c += qi * (lo + hi);
            w += fabsf(qi) * (hi - lo);
        }
        c = warp_sum(c);
        w = warp_sum(w);
        if (lane == 0) est[((long)h * visible + b) * G + g] = 0.5f * (c + spread * w);
    }
}

// Block copies: job i moves bytes[i] (a multiple of 16) from src[i] to dst[i], either side device memory or pinned host
// memory mapped into the device's address space (zero-copy: the reads or writes cross PCIe). One block per job.
struct CopyJob
{
    unsigned long long src, dst; long bytes;
};

extern "C" __global__ void offload_copy(const CopyJob* jobs)
{
    const CopyJob j = jobs[blockIdx.x];
    const uint4* s = (const uint4*)j.src;
    uint4* d = (uint4*)j.dst;
    for (long i = threadIdx.x; i < j.bytes / 16; i += blockDim.x) d[i] = s[i];
}
