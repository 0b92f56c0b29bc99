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
//
// This file holds the kernels production launches (Attention/DecodeKernels.cs): the f16 cache's attn_f16_g1/g4,
// nuq version 9 for 2-4 bits, G = 1 and 4, in the three layouts (slots, _dense, _sparse), and attn_reduce. The
// shared code is in the .cuh headers beside it (KernelLoader hands them to NVRTC); the versions that lost (1-8,
// 10-12) live in the kernel lab (dev/kernels/KernelLab/Kernels/decode_attention_lab.cu, dev/kernels/README.md).

#include "attn_split.cuh"
#include "attn_v7.cuh"

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

// Versions 9 and 10 = v8 with smaller tables (kpair7, vrep7) so that MHA keeps 3 blocks per SM.
#define NUQ_V9(B) NUQ_V7_LAYOUTS(B, 1, 3, 9) NUQ_V7_LAYOUTS(B, 4, 2, 9)

#define F16_ENTRY(G) \
extern "C" __global__ void __launch_bounds__(THREADS) attn_f16_g##G(const AttnArgs a, const float* q, const u16* k, const u16* v, \
    float* part_acc, float2* part_ml, long padded) \
{ attn_split<16, 16, G, 1>(a, q, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, k, v, part_acc, part_ml, padded); }

NUQ_V9(4) NUQ_V9(3) NUQ_V9(2)
F16_ENTRY(1)
F16_ENTRY(4)
