// Device-side append for the KVQuant GPU layout (see decode_attention.cu for the layout) and a synthetic KV source.
// The encoders follow the CPU codecs' math exactly (NuqChannelCodec: u = (x - zero) / range per channel, code =
// number of midpoints below u, |u| > 1 outliers in S slots keeping the largest |u|, ties to the lower channel;
// NuqTokenCodec: the largest then the smallest value are outliers (ties to the lower channel), f16 zero and range
// from the rest), so a token encoded here decodes to what the CPU codec decodes it to.
// KS, VS: key slots and value slots per token: 4 and 2 for nuqB-1%, 0 and 0 for the dense layout (nuqB, "nuqBd" in
// the lab: no outliers, every value clamped into its code like the CPU codecs without an outlier fraction, the
// value zero and range from the token's min and max).

#define D 128
#define TILE 8
#define KSLOTS 4
#define VSLOTS 2
#include "common.cuh"

__device__ __forceinline__ u32 mix(u32 x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x; }
__device__ __forceinline__ float unif(u32 seed, u32 a, u32 b, u32 c)
{
    u32 h = mix(seed ^ mix(a * 0x9E3779B9u + mix(b * 0x85EBCA6Bu + mix(c + 0x27d4eb2fu))));
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

// Synthetic activations: per (head, channel) a mean and spread (so per-channel scaling matters), a roughly normal
// body and 0.4% of values eight times further out (outliers). Explicit _rn operations: the same value whichever
// kernel inlines this (no contraction into FMA).
__device__ float gen(u32 seed, int h, long pos, int c)
{
    float mu = __fmul_rn(__fadd_rn(unif(seed, h, 0x7fffffffu, c), -0.5f), 1.6f);
    float sg = __fadd_rn(0.3f, __fmul_rn(1.2f, unif(seed, h, 0x7ffffffeu, c)));
    u32 p = (u32)pos, ph = (u32)(pos >> 32) * 0x3c6ef372u;
    float g = __fadd_rn(__fadd_rn(__fadd_rn(unif(seed, h, p ^ ph, c), unif(seed + 1, h, p ^ ph, c)), unif(seed + 2, h, p ^ ph, c)), -1.5f);
    g = __fmul_rn(g, 2.0f);
    if (unif(seed + 3, h, p ^ ph, c) < 0.004f) g = __fmul_rn(g, 8.0f);
    return __fadd_rn(mu, __fmul_rn(sg, g));
}

// Raw values [head][pos][D] for pos in [pos0, pos0 + count) (checks and calibration samples).
extern "C" __global__ void kv_materialize(u32 seed, int heads, long pos0, long count, float* out)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x, total = (long)heads * count * D;
    if (i >= total) return;
    int c = (int)(i % D);
    long t = (i / D) % count;
    int h = (int)(i / D / count);
    out[i] = gen(seed, h, pos0 + t, c);
}

// f16 cache rows [head][token][D] for positions pos0 + token, token < n (padding rows zero), rotated when rope != 0
// (the f16 cache keeps post-RoPE keys; the sink keeps pre-RoPE copies).
extern "C" __global__ void kv_write_f16(u32 seed, int heads, long pos0, long n, long padded, int rope, double log2base, u16* out)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x, total = (long)heads * padded * D;
    if (i >= total) return;
    int c = (int)(i % D);
    long t = (i / D) % padded;
    int h = (int)(i / D / padded);
    if (t >= n) { out[i] = 0; return; }
    float x = gen(seed, h, pos0 + t, c);
    if (rope)
    {
        float xp = gen(seed, h, pos0 + t, c ^ 1);
        double s, co;
        sincos((double)(pos0 + t) * exp2(-2.0 * (c >> 1) / D * log2base), &s, &co);
        double r = (c & 1) ? (double)xp * s + (double)x * co : (double)x * co - (double)xp * s;
        x = (float)r;
    }
    out[i] = f2h(x);
}

// Token t, lane channel i at bit (4t + i) * B of the lane's bit stream (decode_attention.cu, code_of).
template <int B>
__device__ __forceinline__ void put_code(u32 (&w)[B], int t, int i, int code)
{
    const int o = (4 * t + i) * B, wi = o >> 5, bi = o & 31;
    w[wi] |= (u32)code << bi;
    if (bi + B > 32) w[wi + 1] |= (u32)code >> (32 - bi);
}

template <int B>
__device__ __forceinline__ int nearest(float u, const float* mids)
{
    int code = 0;
#pragma unroll
    for (int m = 0; m < (1 << B) - 1; ++m) code += u > mids[m] ? 1 : 0;
    return code;
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

// Which of a token's key outliers (flag: the lane's channels with |u| > 1) keep a place: all when there are at most
// KS, else the KS largest |u|, ties to the lower channel, like NuqChannelCodec.SelectOutliers.
template <int KS>
__device__ __forceinline__ int select_outliers(int flag, const float (&mag)[4], int lane)
{
    int total;
    warp_prefix(__popc(flag), lane, total);
    if (total <= KS) return flag;
    int chosen = 0;
    for (int s = 0; s < KS; ++s)
    {
        float best = -1.f; int bc = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < 4; ++i)
            if ((flag >> i & 1) && !(chosen >> i & 1) && mag[i] > best) { best = mag[i]; bc = 4 * lane + i; }
#pragma unroll
        for (int o = 16; o; o >>= 1)
        {
            float ob = __shfl_xor_sync(FULL, best, o); int oc = __shfl_xor_sync(FULL, bc, o);
            if (ob > best || (ob == best && oc < bc)) { best = ob; bc = oc; }
        }
        if ((bc >> 2) == lane) chosen |= 1 << (bc & 3);
    }
    return chosen;
}

// Where the values to encode come from: the synthetic source (positions sink + token) or a device buffer holding
// [head][count][D] floats for stream tokens tok0 .. tok0 + count - 1 (the append path of a real model).
struct GenSource
{
    u32 seed; int sink;
    __device__ float operator()(int h, long tok, int c) const { return gen(seed, h, sink + tok, c); }
};
struct BufferSource
{
    const float* p; long tok0, count;
    __device__ float operator()(int h, long tok, int c) const { return p[((long)h * count + (tok - tok0)) * D + c]; }
};
// A model's chunk as the forward pass holds it: rows [token][KV head][D] for stream tokens tok0 .. (the fused append of
// a whole prefill chunk in one launch; BufferSource's head-major layout equals it only for one token).
struct RowSource
{
    const float* p; long tok0; int heads;
    __device__ float operator()(int h, long tok, int c) const { return p[((tok - tok0) * heads + h) * D + c]; }
};

// Stores a lane's code words of one tile: whole tiles are written, partly covered ones (an append that starts or
// ends inside a tile) keep the other tokens' bits. One launch must not cover a tile from two warps (it never does:
// a warp owns a tile).
template <int B>
__device__ __forceinline__ void store_words(u32* dst, const u32 (&w)[B], const u32 (&m)[B])
{
#pragma unroll
    for (int b = 0; b < B; ++b)
        dst[b * 32] = m[b] == 0xffffffffu ? w[b] : (dst[b * 32] & ~m[b]) | w[b];
}

// One warp per tile of 8 stream tokens; encodes the tokens in [tok0, tok1). 4 warps per block.
template <int B, int KS, class Src>
__device__ void encode_keys(Src src, long tok0, long tok1, long padded, const float* kzero, const float* krange, const float* mids_g,
    u32* codes, u16* slotv, u8* slotc)
{
    const int h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long tile = tok0 / TILE + (long)blockIdx.x * 4 + warp;
    if (tile * TILE >= tok1 || tile * TILE >= padded) return;
    float mids[15];
#pragma unroll
    for (int m = 0; m < (1 << B) - 1; ++m) mids[m] = mids_g[m];
    float kz[4], kr[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) { kz[i] = kzero[h * D + 4 * lane + i]; kr[i] = krange[h * D + 4 * lane + i]; }
    u32 w[B], m[B];
#pragma unroll
    for (int b = 0; b < B; ++b) w[b] = m[b] = 0;
    const long hb = (long)h * padded;
    for (int t = 0; t < TILE; ++t)
    {
        long tok = tile * TILE + t;
        if (tok < tok0 || tok >= tok1) continue;   // the same for the whole warp
        float x[4], mag[4];
        int flag = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i)
        {
            x[i] = src(h, tok, 4 * lane + i);
            float u = (x[i] - kz[i]) / kr[i];
            put_code<B>(w, t, i, nearest<B>(u, mids));
            put_code<B>(m, t, i, (1 << B) - 1);
            mag[i] = fabsf(u);
            if (u > 1.f || u < -1.f) flag |= 1 << i;
        }
        if constexpr (KS == 0) continue;   // dense (and the sparse list's codes): outliers stay clamped in their codes
        int chosen = select_outliers<KS>(flag, mag, lane);
        int kept, rank = warp_prefix(__popc(chosen), lane, kept);
        long sb = (hb + tok) * KS;
#pragma unroll
        for (int i = 0; i < 4; ++i)
            if (chosen >> i & 1) { slotv[sb + rank] = f2h(x[i]); slotc[sb + rank] = (u8)(4 * lane + i); ++rank; }
        if (lane == 0)
            for (int s = kept; s < KS; ++s) { slotv[sb + s] = 0; slotc[sb + s] = 0xff; }
    }
    store_words<B>(codes + (hb / TILE + tile) * B * 32 + lane, w, m);
}

template <int B, int VS, class Src>
__device__ void encode_values(Src src, long tok0, long tok1, long padded, const float* mids_g, u32* codes, u32* zr, u16* slotv, u8* slotc)
{
    const int h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long tile = tok0 / TILE + (long)blockIdx.x * 4 + warp;
    if (tile * TILE >= tok1 || tile * TILE >= padded) return;
    float mids[15];
#pragma unroll
    for (int m = 0; m < (1 << B) - 1; ++m) mids[m] = mids_g[m];
    u32 w[B], m[B];
#pragma unroll
    for (int b = 0; b < B; ++b) w[b] = m[b] = 0;
    const long hb = (long)h * padded;
    for (int t = 0; t < TILE; ++t)
    {
        long tok = tile * TILE + t;
        if (tok < tok0 || tok >= tok1) continue;   // the same for the whole warp
        float x[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) x[i] = src(h, tok, 4 * lane + i);
        // The largest value (ties to the lower channel), then the smallest of the rest (VS = 2: KVQuant's k = 1 per
        // tail at D = 128); dense (VS = 0): no outliers, the zero and range come from all values.
        int cmax = -1, cmin = -1;
        if constexpr (VS > 0)
        {
            float bv = -INFINITY; int bc = 0x7fffffff;
#pragma unroll
            for (int i = 0; i < 4; ++i) if (x[i] > bv) { bv = x[i]; bc = 4 * lane + i; }
#pragma unroll
            for (int o = 16; o; o >>= 1)
            {
                float ov = __shfl_xor_sync(FULL, bv, o); int oc = __shfl_xor_sync(FULL, bc, o);
                if (ov > bv || (ov == bv && oc < bc)) { bv = ov; bc = oc; }
            }
            cmax = bc;
            bv = INFINITY; bc = 0x7fffffff;
#pragma unroll
            for (int i = 0; i < 4; ++i) if (4 * lane + i != cmax && x[i] < bv) { bv = x[i]; bc = 4 * lane + i; }
#pragma unroll
            for (int o = 16; o; o >>= 1)
            {
                float ov = __shfl_xor_sync(FULL, bv, o); int oc = __shfl_xor_sync(FULL, bc, o);
                if (ov < bv || (ov == bv && oc < bc)) { bv = ov; bc = oc; }
            }
            cmin = bc;
        }
        float lo = INFINITY, hi = -INFINITY;
#pragma unroll
        for (int i = 0; i < 4; ++i) if (4 * lane + i != cmax && 4 * lane + i != cmin) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
#pragma unroll
        for (int o = 16; o; o >>= 1) { lo = fminf(lo, __shfl_xor_sync(FULL, lo, o)); hi = fmaxf(hi, __shfl_xor_sync(FULL, hi, o)); }
        u16 zh = f2h(fminf(fmaxf(__fmul_rn(__fadd_rn(hi, lo), 0.5f), -65504.f), 65504.f));
        u16 rh = f2h(fminf(__fmul_rn(__fadd_rn(hi, -lo), 0.5f), 65504.f));
        float zero = h2f(zh), range = h2f(rh);
#pragma unroll
        for (int i = 0; i < 4; ++i)
        {
            float u = range > 0.f ? (x[i] - zero) / range : 0.f;
            put_code<B>(w, t, i, nearest<B>(u, mids));
            put_code<B>(m, t, i, (1 << B) - 1);
        }
        long tb = hb + tok;
        if (lane == 0) zr[tb] = (u32)zh | ((u32)rh << 16);
        if constexpr (VS > 0)
        {
            static_assert(VS == 2, "value slots: the largest and the smallest value");
            if (lane == 0)
            {
                int a = min(cmax, cmin), b = max(cmax, cmin);
                slotc[tb * VS] = (u8)a; slotc[tb * VS + 1] = (u8)b;
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
            {
                int c = 4 * lane + i;
                if (c == cmax || c == cmin) slotv[tb * VS + (c == min(cmax, cmin) ? 0 : 1)] = f2h(x[i]);
            }
        }
    }
    store_words<B>(codes + (hb / TILE + tile) * B * 32 + lane, w, m);
}

// Sparse key outliers (the "sparse" layout, lab nuqBs: dense codes + this list): per (KV head, 256-token chunk) one
// record of KLIST u32 words: word 0 = the count, then up to KLIST - 1 entries (f16 value << 16 | token in the chunk
// << 8 | channel) in token order, channels ascending within a token. Per token at most KS outliers are chosen like
// NuqChannelCodec with KS slots; a chunk whose record is full keeps the first entries (the rest stay clamped in their
// codes). One warp per chunk walks its tokens in order, so appends in any pieces leave the bulk encoder's bytes.
#define CHUNK 256
#define KLIST 48
template <int KS, class Src>
__device__ void encode_key_list(Src src, long tok0, long tok1, long padded, const float* kzero, const float* krange, u32* list)
{
    const int h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long chunk = tok0 / CHUNK + (long)blockIdx.x * 4 + warp;
    const long a = max(tok0, chunk * CHUNK), b = min(tok1, (chunk + 1) * CHUNK);
    if (a >= b || chunk * CHUNK >= padded) return;
    float kz[4], kr[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) { kz[i] = kzero[h * D + 4 * lane + i]; kr[i] = krange[h * D + 4 * lane + i]; }
    u32* rec = list + ((long)h * (padded / CHUNK) + chunk) * KLIST;
    int n = (int)rec[0];   // entries of earlier appends into this chunk (0 in a fresh cache: buffers start zeroed)
    for (long tok = a; tok < b; ++tok)
    {
        float x[4], mag[4];
        int flag = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i)
        {
            x[i] = src(h, tok, 4 * lane + i);
            float u = (x[i] - kz[i]) / kr[i];
            mag[i] = fabsf(u);
            if (u > 1.f || u < -1.f) flag |= 1 << i;
        }
        int chosen = select_outliers<KS>(flag, mag, lane);
        int kept, rank = warp_prefix(__popc(chosen), lane, kept);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            if (chosen >> i & 1)
            {
                int e = n + rank++;
                if (e < KLIST - 1) rec[1 + e] = ((u32)f2h(x[i]) << 16) | ((u32)(tok - chunk * CHUNK) << 8) | (u32)(4 * lane + i);
            }
        n = min(n + kept, KLIST - 1);
    }
    __syncwarp();
    if (lane == 0) rec[0] = (u32)n;
}

// encode_key_list_s{KS}: the synthetic source, stream tokens 0 .. n-1; append_key_list_s{KS}: count tokens from a buffer
// at stream index tok0 (grid: the chunks from tok0 / 256 to (tok0 + count - 1) / 256, four per block).
#define KLIST_ENC(KS) \
extern "C" __global__ void __launch_bounds__(128) encode_key_list_s##KS(u32 seed, int sink, long n, long padded, const float* kz, \
    const float* kr, u32* list) { encode_key_list<KS>(GenSource{seed, sink}, 0, n, padded, kz, kr, list); } \
extern "C" __global__ void __launch_bounds__(128) append_key_list_s##KS(const float* src, long tok0, long count, long padded, \
    const float* kz, const float* kr, u32* list) { encode_key_list<KS>(BufferSource{src, tok0, count}, tok0, tok0 + count, padded, kz, kr, list); }
KLIST_ENC(2)

// encode_*: the synthetic source for stream tokens 0 .. n-1; append_*: count tokens from a buffer [KV head][count][D]
// at stream index tok0 (grid: the tiles from tok0 / 8 to (tok0 + count - 1) / 8, four per block); append_rows_*: the
// same from the model's rows [count][heads][D] (a prefill chunk in one launch: NuqLayerCache.AppendRows). SUF: ""
// for nuqB-1% (KS = 4, VS = 2), _dense for the dense layout (no slots; the slot pointers are not touched and may be null).
#define ENC_L(B, KS, VS, SUF) \
extern "C" __global__ void __launch_bounds__(128) encode_keys_b##B##SUF(u32 seed, int sink, long n, long padded, const float* kz, const float* kr, \
    const float* mids, u32* codes, u16* slotv, u8* slotc) { encode_keys<B, KS>(GenSource{seed, sink}, 0, n, padded, kz, kr, mids, codes, slotv, slotc); } \
extern "C" __global__ void __launch_bounds__(128) encode_values_b##B##SUF(u32 seed, int sink, long n, long padded, const float* mids, \
    u32* codes, u32* zr, u16* slotv, u8* slotc) { encode_values<B, VS>(GenSource{seed, sink}, 0, n, padded, mids, codes, zr, slotv, slotc); } \
extern "C" __global__ void __launch_bounds__(128) append_keys_b##B##SUF(const float* src, long tok0, long count, long padded, const float* kz, \
    const float* kr, const float* mids, u32* codes, u16* slotv, u8* slotc) \
{ encode_keys<B, KS>(BufferSource{src, tok0, count}, tok0, tok0 + count, padded, kz, kr, mids, codes, slotv, slotc); } \
extern "C" __global__ void __launch_bounds__(128) append_values_b##B##SUF(const float* src, long tok0, long count, long padded, const float* mids, \
    u32* codes, u32* zr, u16* slotv, u8* slotc) \
{ encode_values<B, VS>(BufferSource{src, tok0, count}, tok0, tok0 + count, padded, mids, codes, zr, slotv, slotc); } \
extern "C" __global__ void __launch_bounds__(128) append_rows_keys_b##B##SUF(const float* src, long tok0, long count, int heads, long padded, \
    const float* kz, const float* kr, const float* mids, u32* codes, u16* slotv, u8* slotc) \
{ encode_keys<B, KS>(RowSource{src, tok0, heads}, tok0, tok0 + count, padded, kz, kr, mids, codes, slotv, slotc); } \
extern "C" __global__ void __launch_bounds__(128) append_rows_values_b##B##SUF(const float* src, long tok0, long count, int heads, long padded, \
    const float* mids, u32* codes, u32* zr, u16* slotv, u8* slotc) \
{ encode_values<B, VS>(RowSource{src, tok0, heads}, tok0, tok0 + count, padded, mids, codes, zr, slotv, slotc); }
#define ENC(B) ENC_L(B, KSLOTS, VSLOTS, ) ENC_L(B, 0, 0, _dense)

ENC(4)
ENC(3)
ENC(2)
