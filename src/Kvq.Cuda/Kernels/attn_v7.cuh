// Versions 7 to 18 of the nuq decode kernel: one template (attn_v7) whose switches make each version, and the entry
// macro that names its kernels attn_nuq_k<B>_v<B>_g<G>_r<version><layout suffix>. Production compiles version 9
// (decode_attention.cu, NUQ_V9); the kernel lab the others (dev/kernels/KernelLab/Kernels/decode_attention_lab.cu).
#ifndef KVQ_ATTN_V7_CUH
#define KVQ_ATTN_V7_CUH

#include "decode_stage.cuh"

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
// v13 (the group's P x V on the tensor cores in f16): A = V^T read with ldmatrix.trans from a [token][channel] tile.
__device__ __forceinline__ void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
// d += A (16 x 16, row) x B (16 x 8, col), all four A registers.
__device__ __forceinline__ void mma_16816_a4(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
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

// Value levels of a lane's 4 channels for token t of a tile (v9's values pass and v13's tile fill): two pair lookups
// in the value pair table (VR copies, entries 1 << VSH bytes apart) or, with VR = 0, v6's four single lookups in the
// per-lane codebook vt1.
template <int B, int VSH, int VR>
__device__ __forceinline__ float4 value_levels(const u32 (&vw)[B], int t, const char* vt2, const char* vt1, u32 vOff, u32 laneOff)
{
    if constexpr (VR > 0)
    {
        const float2 v01 = *(const float2*)(vt2 + pair_addr<B, VSH>(vw, t, 0, vOff));
        const float2 v23 = *(const float2*)(vt2 + pair_addr<B, VSH>(vw, t, 1, vOff));
        return make_float4(v01.x, v01.y, v23.x, v23.y);
    }
    else
        return make_float4(*(const float*)(vt1 + code_addr6<B>(vw, t, 0, laneOff)), *(const float*)(vt1 + code_addr6<B>(vw, t, 1, laneOff)),
                           *(const float*)(vt1 + code_addr6<B>(vw, t, 2, laneOff)), *(const float*)(vt1 + code_addr6<B>(vw, t, 3, laneOff)));
}

// v15 (the group's P x V on the tensor cores with operands made in registers): a 4-bit code word becomes f16 mma
// operands through byte permutes (prmt), without shared-memory lookups, conversions or a value tile. The 16 f16 value
// levels sit in 8 registers as two byte planes, lo[k] byte j = low byte of level 4k + j, hi[k] the high bytes. A
// prmt picks 4 bytes out of 8 by four 3-bit selectors (the low 16 bits of its selector register, a nibble each; a
// nibble's bit 3 asks for the selected byte's sign instead of the byte): one prmt on (plane[0], plane[1]) with the
// codes themselves as the selectors finds the levels 0-7, one on (plane[2], plane[3]) with bit 3 flipped the levels
// 8-15, and a third picks per byte by bit 3 (the other prmt's byte is a sign byte there, never used). So 4 codes cost
// 3 prmt per byte plane; a word of 8 codes 12, 6 for the selectors and 8 to pair the bytes into f16 pairs.
__device__ __forceinline__ u32 prmt32(u32 a, u32 b, u32 s)
{
    u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
    return d;
}
// BEGIN v15 lookup (dev/kernels/prmt-emu.c compiles the text up to END on the host, with an emulated prmt32)
// Byte planes of a 16-level f16 codebook.
__device__ __forceinline__ void lut16_planes(const u16 (&lev)[16], u32 (&lo)[4], u32 (&hi)[4])
{
#pragma unroll
    for (int k = 0; k < 4; ++k)
    {
        lo[k] = hi[k] = 0u;
#pragma unroll
        for (int j = 0; j < 4; ++j) { lo[k] |= (u32)(lev[4 * k + j] & 0xff) << (8 * j); hi[k] |= (u32)(lev[4 * k + j] >> 8) << (8 * j); }
    }
}
// One byte plane of the levels of the 4 codes in the low 16 bits of s (x = s with every bit 3 flipped, sel = the
// per-byte choice: nibble i = i + 4 x bit 3 of code i).
__device__ __forceinline__ u32 lut16_plane(const u32 (&t)[4], u32 s, u32 x, u32 sel)
{
    return prmt32(prmt32(t[0], t[1], s), prmt32(t[2], t[3], x), sel);
}
// The 8 levels of a 4-bit code word w as f16 pairs: w holds a lane's channels 0-3 (nibbles 0-3) at an even token and
// at the next token (nibbles 4-7); h[i] = (level of channel i at the even token | level at the odd token << 16), an
// mma A register (two k = tokens of one row = channel). 26 instructions for 8 levels.
__device__ __forceinline__ void lut16_word(const u32 (&lo)[4], const u32 (&hi)[4], u32 w, u32 (&h)[4])
{
    const u32 x = w ^ 0x88888888u;
    const u32 sel = ((w >> 1) & 0x44444444u) | 0x32103210u;
    const u32 l0 = lut16_plane(lo, w, x, sel), h0 = lut16_plane(hi, w, x, sel);
    const u32 l1 = lut16_plane(lo, w >> 16, x >> 16, sel >> 16), h1 = lut16_plane(hi, w >> 16, x >> 16, sel >> 16);
    const u32 xa = prmt32(l0, l1, 0x5140u), ya = prmt32(h0, h1, 0x5140u);   // bytes of channels 0, 1: (lo even, lo odd) ...
    const u32 xb = prmt32(l0, l1, 0x7362u), yb = prmt32(h0, h1, 0x7362u);   // ... and of channels 2, 3
    h[0] = prmt32(xa, ya, 0x5140u); h[1] = prmt32(xa, ya, 0x7362u);
    h[2] = prmt32(xb, yb, 0x5140u); h[3] = prmt32(xb, yb, 0x7362u);
}
// Channel of row r (0-15) of v15's O^T slice m (0-7): rows r and r + 8 are channels 2 (m & 1) and 2 (m & 1) + 1 of
// lane 8 (m >> 1) + (r & 7), so that one code word (lane (gr, tq) reads word tq of that lane) gives a lane both rows
// of two slices (lut16_word's h[0..3]).
__device__ __forceinline__ int pv_channel(int m, int r) { return 4 * (8 * (m >> 1) + (r & 7)) + 2 * (m & 1) + (r >> 3); }
// 4-bit code of channel c of token tt of a staged chunk (tt < 256): bits 16 (tt & 1) + 4 (c & 3) of word tt >> 1 of
// lane c >> 2 ([tile][word][lane], tile = tt >> 3, word = (tt & 7) >> 1): code_at<4> without its 64-bit arithmetic.
__device__ __forceinline__ int code4_at(const u32* codes, int tt, int c)
{
    return (int)((codes[(tt >> 1) * 32 + (c >> 2)] >> (16 * (tt & 1) + 4 * (c & 3))) & 15u);
}
// Float <-> int with the same order (finite values and infinities; an involution), for redux.sync's integer max.
__device__ __forceinline__ int order_flip(int i) { return i ^ ((i >> 31) & 0x7fffffff); }
// END v15 lookup
// v16 (the group's keys on the tensor cores without decoding them on the CUDA cores): keys are the mma A operand
// (rows = 16 tokens, k = channels), the group's rotated queries B (k = channels, columns = heads), scores D. The key
// of channel c at token t is z_c + r_c L[code] (one 16-level codebook per layer, per-channel zero and range) rotated
// by RoPE at position P + t. RoPE cannot move to the query side alone: q . R(P + t) k needs a query rotated per token.
// It splits instead, R(P + t) = R(P) R(t): the warp's own position P (chunk base + warp offset) goes to the query once
// per chunk (R(-P) q, f32, rounded to f16 once), and the token's offset t < 32 within the warp's 32 tokens, with the
// per-channel range and zero, goes into a per-block table of 2 x 2 matrices (per offset and RoPE pair):
// R(t)(z + r o L) = L0 (c r0, s r0) + L1 (-s r1, c r1) + R(t) z, so each rotated key pair is two f16x2 FMAs on its
// two looked-up levels (f16 byte planes through prmt, v15's lut16_plane) - no per-token sincos recurrence, no
// conversions, no key tile, no ldmatrix. The channel order of the k dimension is free (it is summed over), so lane
// (gr, tq) of slice s takes the 4 channels of code lane 8 tq + s, and rows gr, gr + 8 are the tokens 2 gr, 2 gr + 1
// of one code word: one 32-bit word gives the lane all 4 A registers of a slice.
// f16x2 fma with the multiplicand broadcast from one half of p (ptxas folds the unpack into the HFMA2's operand
// selectors): d = a x (p.lo, p.lo) + c, e = b x (p.hi, p.hi) + d.
__device__ __forceinline__ u32 kq_key(u32 col0, u32 col1, u32 v, u32 p)
{
    u32 d;
    asm("{\n\t.reg .b16 l, h;\n\t.reg .b32 ll, hh, t;\n\tmov.b32 {l, h}, %4;\n\tmov.b32 ll, {l, l};\n\tmov.b32 hh, {h, h};\n\t"
        "fma.rn.f16x2 t, %2, hh, %3;\n\tfma.rn.f16x2 %0, %1, ll, t;\n\t}" : "=r"(d) : "r"(col0), "r"(col1), "r"(v), "r"(p));
    return d;
}
__device__ __forceinline__ void kq_sincos(float x, float& s, float& c) { __sincosf(x, &s, &c); }
// BEGIN v16 keys (dev/kernels/kq-emu.sh compiles the text up to END on the host with emulated prmt32, kq_key,
// pack_h2 and kq_sincos, and checks the scores of whole chunks against RoPE in double)
// The 8 key levels of a code word w (lane channels 0-3 at an even token in nibbles 0-3, at the odd token in 4-7) as
// f16 pairs of RoPE partners: p[0] = (ch 0, ch 1) and p[1] = (ch 2, ch 3) at the even token, p[2], p[3] at the odd
// one. 22 instructions for 8 levels (v15's lut16_word: 26, pairing tokens instead of channels).
__device__ __forceinline__ void lut16_pairs(const u32 (&lo)[4], const u32 (&hi)[4], u32 w, u32 (&p)[4])
{
    const u32 x = w ^ 0x88888888u;
    const u32 sel = ((w >> 1) & 0x44444444u) | 0x32103210u;
    const u32 l0 = lut16_plane(lo, w, x, sel), h0 = lut16_plane(hi, w, x, sel);
    const u32 l1 = lut16_plane(lo, w >> 16, x >> 16, sel >> 16), h1 = lut16_plane(hi, w >> 16, x >> 16, sel >> 16);
    p[0] = prmt32(l0, h0, 0x5140u); p[1] = prmt32(l0, h0, 0x7362u);
    p[2] = prmt32(l1, h1, 0x5140u); p[3] = prmt32(l1, h1, 0x7362u);
}
// Entries of the per-block key table: [half hb][slice s][part i][lane] uint4 (2 x 8 x 3 x 32 x 16 B = 24 KB; a warp's
// load of one (hb, s, i) is 512 contiguous bytes, no bank conflicts). Lane (gr, tq) of half hb, slice s handles the
// offsets t0 = 16 hb + 2 gr, t1 = t0 + 1 and the pairs j0 = 2 l, j1 = 2 l + 1 of code lane l = 8 tq + s:
// part 0: (col0, col1) of (t0, j0), (t0, j1); part 1: the same at t1; part 2: R(t) z of (t0, j0), (t0, j1), (t1, j0),
// (t1, j1). th: RoPE frequencies per pair, kr / kz: the KV head's key ranges and zeros per channel.
#define KQ_ENTRIES (2 * 8 * 3 * 32)
__device__ __forceinline__ void kq_cols(int t, int j, const float* th, const float* kr, u32& c0, u32& c1)
{
    float sn, cs;
    kq_sincos((float)t * th[j], sn, cs);
    c0 = pack_h2(cs * kr[2 * j], sn * kr[2 * j]);
    c1 = pack_h2(-sn * kr[2 * j + 1], cs * kr[2 * j + 1]);
}
__device__ __forceinline__ u32 kq_zero(int t, int j, const float* th, const float* kz)
{
    float sn, cs;
    kq_sincos((float)t * th[j], sn, cs);
    return pack_h2(cs * kz[2 * j] - sn * kz[2 * j + 1], sn * kz[2 * j] + cs * kz[2 * j + 1]);
}
__device__ __forceinline__ void kq_entry(int e, const float* th, const float* kr, const float* kz, u32 (&o)[4])
{
    const int lane = e & 31, i = (e >> 5) % 3, s = (e / 96) & 7, hb = e / 768;
    const int gr = lane >> 2, tq = lane & 3, l = 8 * tq + s, t0 = 16 * hb + 2 * gr;
    if (i < 2)
    {
        kq_cols(t0 + i, 2 * l, th, kr, o[0], o[1]);
        kq_cols(t0 + i, 2 * l + 1, th, kr, o[2], o[3]);
    }
    else
    {
        o[0] = kq_zero(t0, 2 * l, th, kz); o[1] = kq_zero(t0, 2 * l + 1, th, kz);
        o[2] = kq_zero(t0 + 1, 2 * l, th, kz); o[3] = kq_zero(t0 + 1, 2 * l + 1, th, kz);
    }
}
// Where the rotated query of head g, code lane l (pairs 2 l, 2 l + 1) goes in a warp's [slice][lane] uint2 table of
// B registers: slice l & 7, lane 4 g + (l >> 3) (column g, k rows of code lane l's channels).
__device__ __forceinline__ int kq_qb_index(int g, int l) { return (l & 7) * 32 + 4 * g + (l >> 3); }
// v17: the same table with each slice's row padded by 16 bytes (KQ_QB17 uint2 a row), so that the stores of one head
// (a half-warp writes 8 slices x 2 lanes) fall on 16 different bank pairs instead of 8 lanes on one (kq_qb_index:
// 8-way conflicts, 16 wavefronts a store instead of 2); the loads of a slice stay one row, lane by lane (an XOR swizzle
// of the row did the same for the stores, but its 8 per-slice addresses cost ptxas 11.8 a 28-byte spill).
#define KQ_QB17 34
__device__ __forceinline__ int kq_qb_index17(int g, int l) { return (l & 7) * KQ_QB17 + 4 * g + (l >> 3); }
__device__ __forceinline__ int kq_qb_load17(int s, int lane) { return s * KQ_QB17 + lane; }
// v17: the staged value codes skewed per row (a row = one word of a tile for the 32 code lanes, 128 B): the 16-byte
// piece p of row R goes to piece (p + 2 R) & 7, i.e. code lane c of row R to word (c + 8 R) & 31. The values pass's lane
// (gr, tq) reads code lanes gr + 8 M of rows = tq (mod 4): unskewed the 4 tq lanes of a gr hit one bank (4 wavefronts
// a load), skewed they hit gr + 8 ((M + tq) & 3), 32 banks (1). vskew17: byte offset in the stage -> skewed offset.
__device__ __forceinline__ int vskew17(int off) { return (off & ~0x7f) | ((((off >> 4) + 2 * (off >> 7)) & 7) << 4) | (off & 15); }
__device__ __forceinline__ int vword17(int row, int c) { return row * 32 + ((c + 8 * row) & 31); }
// Code of channel c of staged token tt (< 256) in the skewed value codes (v15's code4_at on the skewed layout).
__device__ __forceinline__ int code4_at17(const u32* codes, int tt, int c)
{
    return (int)((codes[vword17(tt >> 1, c >> 2)] >> (16 * (tt & 1) + 4 * (c & 3))) & 15u);
}
// The code word (u32 index into the staged chunk's codes, [tile][word][lane]) whose 8 codes lane (gr, tq) turns into
// its A registers for half hb of the warp's 32 tokens (from w0), slice s: tokens w0 + 16 hb + 2 gr, + 1.
__device__ __forceinline__ int kq_word(int w0, int hb, int lane, int s)
{
    const int gr = lane >> 2, tq = lane & 3;
    return ((w0 / 8 + 2 * hb + (gr >> 2)) * 4 + (gr & 3)) * 32 + 8 * tq + s;
}
// v18: one 16-offset table for both halves of a warp's 32 tokens (v16's half hb = 0: kq_entry for e < KQ_ENTRIES18,
// 12 KB), each entry loaded once per slice and used for two tokens 16 apart. RoPE splits once more: a token of the
// second half, at P + 16 + t', is R(P + 16) R(t') k, so its query side is R(-(P + 16)) q. The mma's 8 columns hold
// both: columns 0-3 the group's heads rotated by R(-P), columns 4-7 the same heads by R(-(P + 16)) (v16 left 4-7
// zero). Per slice two mmas, one per offset parity: rows gr = the first half's token 2 gr (+ 1), rows gr + 8 = the
// second half's token 16 + 2 gr (+ 1), the same table entry for both rows; the useful outputs are rows gr x columns
// 0-3 and rows gr + 8 x columns 4-7 (the other two quarters mix a half's keys with the other half's query: unused).
#define KQ_ENTRIES18 (8 * 3 * 32)
// Where the rotated query of head g, code lane l goes in v18's B-register table: v17's padded rows, lanes 16-31 of a
// row (the B columns 4-7) for the second half's rotation (half = 1). A store of one (g, half) stays 2 wavefronts.
__device__ __forceinline__ int kq_qb_index18(int g, int l, int half) { return kq_qb_index17(g, l) + 16 * half; }
// END v16 keys
// The warp's maximum of v in one redux.sync (sm_80+) on order-preserving integers.
__device__ __forceinline__ float warp_max(float v)
{
    int r;
    asm("redux.sync.max.s32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(order_flip(__float_as_int(v))));
    return __int_as_float(order_flip(r));
}

// v17: decode_stage.cuh's issue_values with the value codes copied to their skewed places (vskew17).
template <int B, int KS, int VS, int KL>
__device__ __forceinline__ void issue_values17(char* st, long hb, long cbase, const u32* vcodes, const u32* vzr, const u16* vslotv, const u8* vslotc)
{
    using S = Stage<B, KS, VS, KL>;
    const char* const src = (const char*)(vcodes + (hb + cbase) / TILE * B * 32);
    for (int off = threadIdx.x * 16; off < S::VC; off += T4 * 16) cp_async16(st + S::VC + vskew17(off), src + off);
    copy_range(st + S::VZR, (const char*)(vzr + hb + cbase), CHUNK * 4);
    if constexpr (VS > 0)
    {
        copy_range(st + S::VSV, (const char*)(vslotv + (hb + cbase) * VS), CHUNK * VS * 2);
        copy_range(st + S::VSC, (const char*)(vslotc + (hb + cbase) * VS), CHUNK * VS);
    }
    cp_async_commit();
}

template <int B, int G, int KS = KSLOTS, int VS = VSLOTS, int KL = 0, bool WS = false, bool KP = (B < 4), int VR = (B == 4 ? 16 : 32), bool TC = false,
    bool TV = false, bool TH = false, bool PV = false, bool KQ = false, bool K17 = false, bool K18 = false>
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
    // v13 (TH): the tile holds 16 tokens, since the values pass writes 16 dequantized value rows there for one f16 mma.
    constexpr int WT = (TH ? 2 * TILE : TILE) * D * 2;   // bytes of a warp's tile
    constexpr int K16 = TC ? W4 * WT : 0;
    static_assert(!TH || (TC && WS && !TV && G % 2 == 0 && G <= 8), "v13: v11's keys, warp-local softmax, heads in pairs of mma columns");
    static_assert(!PV || (TC && WS && !TV && !TH && B == 4 && G % 2 == 0 && G <= 8), "v15: v11's keys, warp-local softmax, 4-bit values, heads in pairs of mma columns");
    static_assert(!KQ || PV, "v16: v15 with the keys as tensor-core operands made by prmt");
    static_assert(!K17 || KQ, "v17: v16 with fewer shared-memory wavefronts");
    static_assert(!K18 || K17, "v18: v17 with one 16-offset key table for both halves of a warp's tokens");
    char* const s_k16 = s_stage + S::BYTES + T::VBYTES + T::KBYTES;
    // v16: s_k16 holds each warp's rotated query B registers instead ([slice][lane] uint2, 2 KB, the same size), and
    // after it the per-block key table (kq_entry, 24 KB).
    constexpr int KMB = KQ ? (K18 ? KQ_ENTRIES18 : KQ_ENTRIES) * 16 : 0;   // v18: half of v16's
    // v17: each warp's B registers in padded rows (kq_qb_index17): 8 x 272 B a warp instead of v11's 2 KB tile.
    constexpr int WQ = K17 ? 8 * KQ_QB17 * 8 : WT;
    constexpr int KQB = K17 ? W4 * WQ : K16;
    uint4* const s_km = (uint4*)(s_k16 + KQB);
    {
        u32 dyn;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
        if (dyn < (u32)(S::BYTES + T::VBYTES + T::KBYTES + KQB + KMB)) __trap();
    }
    const int h = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int numChunks = (a.n + CHUNK - 1) / CHUNK;
    const int c0 = split * a.chunksPerSplit, c1 = min(numChunks, c0 + a.chunksPerSplit);
    const long hb = (long)h * padded;
    if (c0 < c1) issue_keys<B, KS, KL>(s_stage, hb, (long)c0 * CHUNK, kcodes, kslotv, kslotc);

    __shared__ __align__(16) float s_sc[G][CHUNK];
    __shared__ __align__(16) float s_pr[G][CHUNK];
    // v17: s_q and s_vout 16-byte aligned for float4 accesses (alignas(4) is a float's own: the older versions' PTX).
    alignas(K17 ? 16 : 4) __shared__ float s_q[G][D];
    __shared__ float s_kt[KPAIR || KQ ? 1 : 4][KPAIR || KQ ? 1 : L][32];   // single key lookups: v6's [lane channel][code][lane]
    __shared__ float s_vt[VR || KQ ? 1 : L][32];                             // single value lookups: v6's codebook once per lane
    __shared__ float s_kcb[16], s_vcb[16];
    __shared__ float s_kz[D], s_kr[D];
    alignas(K17 ? 16 : 4) __shared__ float s_vout[W4][G][D];
    __shared__ float s_m[G], s_l[G], s_alpha[G], s_pz[G];
    __shared__ float s_th[D / 2], s_cb[D / 2], s_sb[D / 2];
    __shared__ u8 s_olist[W4][32 * (KS > 0 ? KS : 1)];
    __shared__ float s_wm[WS ? W4 : 1][G], s_wl[WS ? W4 : 1][G], s_wpz[WS ? W4 : 1][G];   // v8: each warp's softmax state
    // v12: the value codebook per lane as (hi, lo) tf32 pairs, [code][lane].
    __shared__ __align__(16) float2 s_vhl[TV ? L : 1][32];
    // v15: v11's query fragments in shared memory ([slice pair][lane]: 16 registers fewer a thread, one 16-byte load per
    // slice pair and tile instead), beside its 32 accumulators and 8 codebook registers.
    __shared__ __align__(16) uint4 s_qf[PV ? D / 32 : 1][32];
    // v15: the f16 value codebook's byte planes (lut16_planes; loaded into 8 registers for the values pass only) and
    // the chunk-angle recurrence of threads 0-63 (cos, sin, step cos, step sin) in shared memory instead of 8 registers
    // live through the chunk loop: with both in registers ptxas (11.8) spilled 124 B, with both here 8 B.
    __shared__ __align__(16) u32 s_vlut[PV ? 8 : 1];
    __shared__ __align__(16) u32 s_klut[KQ ? 8 : 1];   // v16: the key codebook's f16 byte planes
    __shared__ double s_rot[PV ? 4 : 1][PV ? D / 2 : 1];
    static_assert(!TV || (WS && G % 2 == 0 && G <= 8), "v12: warp-local softmax, heads in pairs of mma columns");
    float wm[G], wl[G], wpz[G];   // v8: the warp's running max, sum and zero term (the same in every lane)
#pragma unroll
    for (int g = 0; g < G; ++g) { wm[g] = -INFINITY; wl[g] = 0.f; wpz[g] = 0.f; }

    for (int i = threadIdx.x; i < G * D; i += T4) s_q[i / D][i % D] = q[(long)(h * G + i / D) * D + i % D] * a.scale;
    for (int i = threadIdx.x; i < W4 * G * D; i += T4) (&s_vout[0][0][0])[i] = 0.f;
    if (threadIdx.x < 16) { s_kcb[threadIdx.x] = kcb[threadIdx.x & (L - 1)]; s_vcb[threadIdx.x] = vcb[threadIdx.x & (L - 1)]; }
    for (int i = threadIdx.x; i < D; i += T4) { s_kz[i] = kzero[h * D + i]; s_kr[i] = krange[h * D + i]; }
    if constexpr (KQ)   // v16: the lanes' B registers of heads G..7 stay zero; the others are written per chunk
        for (int i = threadIdx.x; i < KQB / 16; i += T4) ((uint4*)s_k16)[i] = make_uint4(0u, 0u, 0u, 0u);
    else if constexpr (!KPAIR)
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
    else if constexpr (!KQ)
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
        if constexpr (PV) { s_rot[0][threadIdx.x] = dc; s_rot[1][threadIdx.x] = ds; s_rot[2][threadIdx.x] = stc; s_rot[3][threadIdx.x] = sts; }
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
    // v13: the same O^T tiles (channels x heads) from m16n8k16 f16 mmas: lane (gr, tq) holds channels 16 m + gr (d0, d1)
    // and 16 m + gr + 8 (d2, d3) for heads 2 tq (d0, d2) and 2 tq + 1 (d1, d3).
    // v15: the same O^T tiles with the rows in pv_channel's order.
    float acc2[TV || TH || PV ? D / 16 : 1][4];
#pragma unroll
    for (int m = 0; m < (TV || TH || PV ? D / 16 : 1); ++m) acc2[m][0] = acc2[m][1] = acc2[m][2] = acc2[m][3] = 0.f;
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
        if constexpr (PV)   // read after the chunk loop's first barrier
            if (warp == 0)
#pragma unroll
                for (int j = 0; j < D / 32; ++j) s_qf[j][lane] = make_uint4(qfr[2 * j][0], qfr[2 * j][1], qfr[2 * j + 1][0], qfr[2 * j + 1][1]);
        kBase = (u32)__cvta_generic_to_shared(s_k16 + warp * WT);
    }

    // v15: the value codebook in f16 as two byte planes in registers (lut16_planes).
    if constexpr (PV)
        if (threadIdx.x == 0)
        {
            u16 lev[16];
            u32 vlo[4], vhi[4];
#pragma unroll
            for (int e = 0; e < 16; ++e) lev[e] = f2h(s_vcb[e]);
            lut16_planes(lev, vlo, vhi);
            *(uint4*)&s_vlut[0] = make_uint4(vlo[0], vlo[1], vlo[2], vlo[3]);
            *(uint4*)&s_vlut[4] = make_uint4(vhi[0], vhi[1], vhi[2], vhi[3]);
            if constexpr (KQ)
            {
#pragma unroll
                for (int e = 0; e < 16; ++e) lev[e] = f2h(s_kcb[e]);
                lut16_planes(lev, vlo, vhi);
                *(uint4*)&s_klut[0] = make_uint4(vlo[0], vlo[1], vlo[2], vlo[3]);
                *(uint4*)&s_klut[4] = make_uint4(vhi[0], vhi[1], vhi[2], vhi[3]);
            }
        }
    // v16: the key table (offsets 0-31 of a warp's tokens x RoPE pairs: rotation, range and zero; kq_entry), read
    // after the chunk loop's first barrier.
    if constexpr (KQ)
        for (int e = threadIdx.x; e < (K18 ? KQ_ENTRIES18 : KQ_ENTRIES); e += T4)
        {
            u32 o[4];
            kq_entry(e, s_th, s_kr, s_kz, o);
            s_km[e] = make_uint4(o[0], o[1], o[2], o[3]);
        }

    for (int chunk = c0, it = 0; chunk < c1; ++chunk, ++it)
    {
        const long cbase = (long)chunk * CHUNK;
        char* st = s_stage;
        if (threadIdx.x < D / 2)
        {
            if constexpr (PV) { dc = s_rot[0][threadIdx.x]; ds = s_rot[1][threadIdx.x]; stc = s_rot[2][threadIdx.x]; sts = s_rot[3][threadIdx.x]; }
            s_cb[threadIdx.x] = (float)dc; s_sb[threadIdx.x] = (float)ds;
            double t = dc * stc - ds * sts;
            ds = ds * stc + dc * sts;
            dc = t;
            if constexpr (PV) { s_rot[0][threadIdx.x] = dc; s_rot[1][threadIdx.x] = ds; }
        }
        cp_async_wait_all();
        __syncthreads();
        if constexpr (K17) issue_values17<B, KS, VS, KL>(st, hb, cbase, vcodes, vzr, vslotv, vslotc);
        else issue_values<B, KS, VS, KL>(st, hb, cbase, vcodes, vzr, vslotv, vslotc);
        const u32* kc = (const u32*)(st + S::KC);
        const u32* vc = (const u32*)(st + S::VC);
        const int w0 = warp * (CHUNK / W4);

        // ---- scores ----
        float rc[2], rs[2], rc16[2], rs16[2];
#pragma unroll
        for (int p = 0; p < 2; ++p)
        {
            float cb = s_cb[2 * lane + p], sb = s_sb[2 * lane + p];
            if constexpr (K18)
            {
                // v18: the warp's offsets (P and P + 16 from the chunk's start, < 256 positions) by __sincosf per chunk
                // instead of 4 registers held through the loop (wc, ws): absolute error ~1e-5 at 240 rad, far under the
                // f16 rounding of the B registers (2^-11 relative). rc16, rs16: the second half's R(-(P + 16)).
                const float th = s_th[2 * lane + p];
                float w_c, w_s;
                kq_sincos((float)w0 * th, w_s, w_c);
                rc[p] = cb * w_c - sb * w_s; rs[p] = sb * w_c + cb * w_s;
                kq_sincos((float)(w0 + 16) * th, w_s, w_c);
                rc16[p] = cb * w_c - sb * w_s; rs16[p] = sb * w_c + cb * w_s;
            }
            else
            {
                rc[p] = cb * wc[p] - sb * ws[p];
                rs[p] = sb * wc[p] + cb * ws[p];
            }
        }
        if constexpr (KQ)
        {
            // v16: the group's queries rotated back by the warp's position P (rc, rs: cos and sin of P x theta for
            // this lane's pairs 2 lane, 2 lane + 1), R(-P) q, as the warp's B registers (kq_qb_index).
            uint2* const qb = (uint2*)(s_k16 + warp * WQ);
            __syncwarp();   // the previous chunk's reads are done
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                float q0, q1, q2, q3;
                if constexpr (K17)   // v17: one 16-byte load (4 wavefronts) instead of 4 scalar loads 4-way conflicted (16)
                {
                    const float4 q4 = *(const float4*)&s_q[g][4 * lane];
                    q0 = q4.x; q1 = q4.y; q2 = q4.z; q3 = q4.w;
                }
                else { q0 = s_q[g][4 * lane]; q1 = s_q[g][4 * lane + 1]; q2 = s_q[g][4 * lane + 2]; q3 = s_q[g][4 * lane + 3]; }
                qb[K17 ? kq_qb_index17(g, lane) : kq_qb_index(g, lane)] = make_uint2(pack_h2(q0 * rc[0] + q1 * rs[0], q1 * rc[0] - q0 * rs[0]),
                                                      pack_h2(q2 * rc[1] + q3 * rs[1], q3 * rc[1] - q2 * rs[1]));
                if constexpr (K18)
                    qb[kq_qb_index18(g, lane, 1)] = make_uint2(pack_h2(q0 * rc16[0] + q1 * rs16[0], q1 * rc16[0] - q0 * rs16[0]),
                                                               pack_h2(q2 * rc16[1] + q3 * rs16[1], q3 * rc16[1] - q2 * rs16[1]));
            }
            __syncwarp();
            // S (16 tokens x heads) = K (16 tokens x 128 channels, rotated by the token's offset, range and zero
            // applied: kq_key) x R(-P) Q^T, per half of the warp's 32 tokens 8 slices of 16 channels.
            const int gr = lane >> 2, tq = lane & 3;
            const uint4 kl4 = *(const uint4*)&s_klut[0], kh4 = *(const uint4*)&s_klut[4];
            const u32 klo[4] = {kl4.x, kl4.y, kl4.z, kl4.w}, khi[4] = {kh4.x, kh4.y, kh4.z, kh4.w};
#pragma unroll
            for (int hb = 0; hb < (K18 ? 0 : 2); ++hb)   // v18: its own loop below
            {
                const uint4 wa = *(const uint4*)(kc + kq_word(w0, hb, lane, 0)), wb = *(const uint4*)(kc + kq_word(w0, hb, lane, 4));
                const u32 kw8[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
                float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int sl = 0; sl < D / 16; ++sl)
                {
                    const uint4 m0 = s_km[((hb * 8 + sl) * 3) * 32 + lane], m1 = s_km[((hb * 8 + sl) * 3 + 1) * 32 + lane],
                        mz = s_km[((hb * 8 + sl) * 3 + 2) * 32 + lane];
                    u32 p[4];
                    lut16_pairs(klo, khi, kw8[sl], p);
                    const uint2 bq = qb[K17 ? kq_qb_load17(sl, lane) : sl * 32 + lane];
                    mma_16816_a4(d, kq_key(m0.x, m0.y, mz.x, p[0]), kq_key(m1.x, m1.y, mz.z, p[2]),
                                 kq_key(m0.z, m0.w, mz.y, p[1]), kq_key(m1.z, m1.w, mz.w, p[3]), bq.x, bq.y);
                }
                // D: rows gr, gr + 8 = tokens 2 gr, 2 gr + 1 of the half; columns 2 tq, 2 tq + 1 = heads.
                if (2 * tq < G)
                {
                    const int tok = w0 + 16 * hb + 2 * gr;
                    const bool l0 = cbase + tok < a.n, l1 = cbase + tok + 1 < a.n;
                    *(float2*)&s_sc[2 * tq][tok] = make_float2(l0 ? d[0] : -INFINITY, l1 ? d[2] : -INFINITY);
                    *(float2*)&s_sc[2 * tq + 1][tok] = make_float2(l0 ? d[1] : -INFINITY, l1 ? d[3] : -INFINITY);
                }
            }
            if constexpr (K18)
            {
                // v18: per slice the table's 3 entries are loaded once for both halves (v17: once per half: 24 16-byte
                // loads a lane and chunk instead of 48), and two mmas by offset parity: de for offsets 2 gr, dd for
                // 2 gr + 1; rows gr = the first half's token, rows gr + 8 = the second half's (16 tokens later, the
                // same entry), columns 0-3 / 4-7 = the heads rotated by R(-P) / R(-(P + 16)) (kq_qb_index18).
                static_assert(G == 4, "v18: B columns 0-3 and 4-7 are the group's 4 heads at two rotations");
                float de[4] = {0.f, 0.f, 0.f, 0.f}, dd[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int sq = 0; sq < 2; ++sq)
                {
                    const uint4 wa = *(const uint4*)(kc + kq_word(w0, 0, lane, 4 * sq)), wb = *(const uint4*)(kc + kq_word(w0, 1, lane, 4 * sq));
                    const u32 k0[4] = {wa.x, wa.y, wa.z, wa.w}, k1[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
                    for (int s4 = 0; s4 < 4; ++s4)
                    {
                        const int sl = 4 * sq + s4;
                        const uint4 m0 = s_km[(sl * 3) * 32 + lane], m1 = s_km[(sl * 3 + 1) * 32 + lane], mz = s_km[(sl * 3 + 2) * 32 + lane];
                        const uint2 bq = qb[kq_qb_load17(sl, lane)];
                        u32 p0[4], p1[4];
                        lut16_pairs(klo, khi, k0[s4], p0);
                        lut16_pairs(klo, khi, k1[s4], p1);
                        mma_16816_a4(de, kq_key(m0.x, m0.y, mz.x, p0[0]), kq_key(m0.x, m0.y, mz.x, p1[0]),
                                     kq_key(m0.z, m0.w, mz.y, p0[1]), kq_key(m0.z, m0.w, mz.y, p1[1]), bq.x, bq.y);
                        mma_16816_a4(dd, kq_key(m1.x, m1.y, mz.z, p0[2]), kq_key(m1.x, m1.y, mz.z, p1[2]),
                                     kq_key(m1.z, m1.w, mz.w, p0[3]), kq_key(m1.z, m1.w, mz.w, p1[3]), bq.x, bq.y);
                    }
                }
                // Lane (gr, tq) holds columns 2 tq, 2 tq + 1: tq < 2 heads 2 tq, + 1 of the first half (rows gr: d[0],
                // d[1]), tq >= 2 heads 2 (tq - 2), + 1 of the second half (rows gr + 8: d[2], d[3]); every lane writes.
                const int hf = tq >> 1, g0 = 2 * (tq & 1), tok = w0 + 16 * hf + 2 * gr;
                const bool l0 = cbase + tok < a.n, l1 = cbase + tok + 1 < a.n;
                const float e0 = hf ? de[2] : de[0], e1 = hf ? de[3] : de[1], o0 = hf ? dd[2] : dd[0], o1 = hf ? dd[3] : dd[1];
                *(float2*)&s_sc[g0][tok] = make_float2(l0 ? e0 : -INFINITY, l1 ? o0 : -INFINITY);
                *(float2*)&s_sc[g0 + 1][tok] = make_float2(l0 ? e1 : -INFINITY, l1 ? o1 : -INFINITY);
            }
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
        // (v16 skips the loop by its bound and has its block above the G == 1 one: an "else" around the loop, or a
        // discarded "if constexpr" block right before its #pragma unroll, made NVRTC 11.8 unroll the other versions
        // differently; this way their PTX stays what it was.)
#pragma unroll
        for (int tile = 0; tile < (KQ ? 0 : TPW4); ++tile)
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
                        *(uint2*)(s_k16 + warp * WT + t * 256 + (((lane >> 1) ^ t) << 4) + ((lane & 1) << 3)) =
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
                    if constexpr (PV)
                    {
                        const uint4 qf = s_qf[j][lane];
                        mma_16816(d0, qf.x, qf.y, b0, b1);
                        mma_16816(d1, qf.z, qf.w, b2, b3);
                    }
                    else
                    {
                        mma_16816(d0, qfr[2 * j][0], qfr[2 * j][1], b0, b1);
                        mma_16816(d1, qfr[2 * j + 1][0], qfr[2 * j + 1][1], b2, b3);
                    }
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
            if constexpr (PV)
            {
                // v15: each lane corrects its own token's slots (at most 4; empty = 0xff), so the token's scores are
                // the lane's alone: plain adds instead of a compacted list, a warp prefix count and 4 shared-memory
                // float atomics (compare-and-swap loops) per outlier. sin/cos by the approximate instructions: the
                // angle (float)tt * theta is < 256 rad, where their absolute error stays under 1e-6 (the angle's
                // own rounding is ~1.5e-5).
                const int tt = w0 + lane;
                const u32 cs4 = ksc[tt];
                float add[G];
#pragma unroll
                for (int g = 0; g < G; ++g) add[g] = 0.f;
#pragma unroll
                for (int sl = 0; sl < KS; ++sl)
                {
                    const int c = (cs4 >> (8 * sl)) & 0xff;
                    if (c != 0xff && cbase + tt < a.n)
                    {
                        const float d = h2f(ksv[tt * KS + sl]) - fmaf(s_kr[c], s_kcb[code4_at(kc, tt, c)], s_kz[c]);
                        float so, co;
                        __sincosf((float)tt * s_th[c >> 1], &so, &co);
                        const float cb = s_cb[c >> 1], sb = s_sb[c >> 1];
                        const float cs = cb * co - sb * so, sn = sb * co + cb * so;
                        const int c0e = c & ~1;
                        const float x0 = (c & 1) ? -d * sn : d * cs, x1 = (c & 1) ? d * cs : d * sn;
#pragma unroll
                        for (int g = 0; g < G; ++g) add[g] += s_q[g][c0e] * x0 + s_q[g][c0e + 1] * x1;
                    }
                }
#pragma unroll
                for (int g = 0; g < G; ++g) s_sc[g][tt] += add[g];
            }
            else
            {
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
            bool rescale = false;               // v15: whether any head's max moved (warp-uniform)
#pragma unroll
            for (int g = 0; g < G; ++g)
            {
                const float v = s_sc[g][w0 + lane];
                float cm = v;
                if constexpr (PV) cm = warp_max(v);   // v15: one redux.sync instead of 5 shuffles and maxima
                else
                {
#pragma unroll
                    for (int o = 16; o; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(FULL, cm, o));
                }
                const float mn = fmaxf(wm[g], cm);
                // v15: exactly 1 when the max did not move, so that the rescaling below can be skipped.
                // v17: also 1 while the warp has seen no live token (wm = -inf): every sum and accumulator is still 0,
                // so the first chunk's rescaling (alpha = 0 on zeros) is skipped too.
                const float alpha = mn == -INFINITY || (PV && mn == wm[g]) || (K17 && wm[g] == -INFINITY) ? 1.f : __expf(wm[g] - mn);
                const float p = mn == -INFINITY ? 0.f : __expf(v - mn);
                s_sc[g][w0 + lane] = p;
                if constexpr (!TH) s_pr[g][w0 + lane] = p * zrng;
                float sum = p, pz = TH ? 0.f : p * zz;   // v13: the tile holds whole values (zero included)
                // v15: each lane keeps its own partial sums (alpha is the same in every lane), summed once at the end.
                if constexpr (!PV)
                {
#pragma unroll
                    for (int o = 16; o; o >>= 1) { sum += __shfl_xor_sync(FULL, sum, o); pz += __shfl_xor_sync(FULL, pz, o); }
                }
                wm[g] = mn; wl[g] = wl[g] * alpha + sum; wpz[g] = wpz[g] * alpha + pz;
                if constexpr (PV)
                {
                    if (alpha != 1.f)
                    {
                        rescale = true;
                        if constexpr (K17)   // v17: one 16-byte load and store (4 wavefronts each) instead of 4 + 4 scalar (16 each)
                        {
                            float4& o4 = *(float4*)&s_vout[warp][g][4 * lane];
                            float4 o = o4;
                            o.x *= alpha; o.y *= alpha; o.z *= alpha; o.w *= alpha;
                            o4 = o;
                        }
                        else
                        {
#pragma unroll
                            for (int i = 0; i < 4; ++i) s_vout[warp][g][4 * lane + i] *= alpha;
                        }
                    }
                }
                else
                {
#pragma unroll
                    for (int i = 0; i < 4; ++i) { if constexpr (!TH) acc[g][i] *= alpha; s_vout[warp][g][4 * lane + i] *= alpha; }
                }
                if constexpr (TV || TH || PV)
                {
                    if (g == 2 * (lane & 3)) alpha0 = alpha;
                    if (g == 2 * (lane & 3) + 1) alpha1 = alpha;
                }
            }
            if constexpr (TV || TH || PV)
                if (!PV || rescale)
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
        if constexpr (PV)
        {
            // v15: O^T (16 channels x heads) += V^T (16 channels x 16 tokens) x (p x range)^T (16 tokens x heads) per
            // slice, the A registers straight from the code words (lut16_word: levels in f16, no shared-memory
            // lookup, no tile), B = p x range in f16 (s_pr); the zero term is wpz, as in v9. Lane (gr, tq) reads word
            // tq (tokens 2 tq, 2 tq + 1) of lane 8 M + gr in both tiles of the 16 tokens: slices 2 M and 2 M + 1.
            // A level is rounded to f16 once for every token that uses it (v12's hi/lo reason; v13+'s 1e-3 check).
            const int gr = lane >> 2, tq = lane & 3;
            const uint4 lo4 = *(const uint4*)&s_vlut[0], hi4 = *(const uint4*)&s_vlut[4];
            const u32 vlo[4] = {lo4.x, lo4.y, lo4.z, lo4.w}, vhi[4] = {hi4.x, hi4.y, hi4.z, hi4.w};
#pragma unroll
            for (int ks = 0; ks < TPW4 / 2; ++ks)
            {
                const int s0 = w0 + ks * 2 * TILE;
                u32 b0 = 0u, b1 = 0u;
                if (gr < G)
                {
                    const float2 pa = *(const float2*)&s_pr[gr < G ? gr : 0][s0 + 2 * tq];
                    const float2 pb = *(const float2*)&s_pr[gr < G ? gr : 0][s0 + TILE + 2 * tq];
                    b0 = pack_h2(pa.x, pa.y); b1 = pack_h2(pb.x, pb.y);
                }
                const u32* const wa = vc + ((w0 / TILE + 2 * ks) * B + tq) * 32 + gr;
                const u32* const wb = wa + B * 32;
#pragma unroll
                for (int M = 0; M < D / 32; ++M)
                {
                    u32 ha[4], hb[4];
                    // v17: the skewed rows (vword17; rows 4 apart share the skew, so wb stays wa + 4 rows)
                    const int cm = K17 ? 8 * ((M + tq) & 3) : 8 * M;
                    lut16_word(vlo, vhi, wa[cm], ha);
                    lut16_word(vlo, vhi, wb[cm], hb);
                    mma_16816_a4(acc2[2 * M], ha[0], ha[1], hb[0], hb[1], b0, b1);
                    mma_16816_a4(acc2[2 * M + 1], ha[2], ha[3], hb[2], hb[3], b0, b1);
                }
            }
        }
        else if constexpr (TH)
        {
            // v13: per 16 tokens the warp decodes whole values (zero + range x level, as v9 decodes levels) into its
            // f16 tile [token][16-byte chunk ^ (token & 7)][8 channels], then O^T (16 channels x heads) += V^T (16
            // channels x 16 tokens, ldmatrix.trans) x P^T (16 tokens x heads, p in f16) for the 8 channel slices.
            // Rounding a value or p to f16 happens once per token (2^-12 relative, averaging out over the tokens);
            // the levels are not rounded alone (v12's reason for its hi/lo split).
            const int gr = lane >> 2, tq = lane & 3;
            char* const vt16 = s_k16 + warp * WT;
            const int rr = (lane & 7) + ((lane >> 4) << 3);            // ldmatrix row (token) this lane addresses
            const u32 rowA = (u32)__cvta_generic_to_shared(vt16) + (u32)(rr * 256);
#pragma unroll
            for (int ks = 0; ks < TPW4 / 2; ++ks)
            {
                __syncwarp();
#pragma unroll
                for (int hf = 0; hf < 2; ++hf)
                {
                    const int tile = 2 * ks + hf, stt = w0 + tile * TILE;
                    u32 vw[B];
#pragma unroll
                    for (int b = 0; b < B; ++b) vw[b] = vc[((w0 / TILE + tile) * B + b) * 32 + lane];
#pragma unroll
                    for (int t = 0; t < TILE; ++t)
                    {
                        const float4 lv = value_levels<B, T::VSH, VR>(vw, t, s_vt2, (const char*)&s_vt[0][0], vOff, laneOff);
                        const float l0 = lv.x, l1 = lv.y, l2 = lv.z, l3 = lv.w;
                        const u32 z = zr[stt + t];
                        const float zz = h2f(z & 0xffff), rg = h2f(z >> 16);
                        const bool live = cbase + stt + t < a.n;   // padding past the stream: zeros, never NaN x 0
                        *(uint2*)(vt16 + (hf * TILE + t) * 256 + (((lane >> 1) ^ t) << 4) + ((lane & 1) << 3)) = live
                            ? make_uint2(pack_h2(fmaf(rg, l0, zz), fmaf(rg, l1, zz)), pack_h2(fmaf(rg, l2, zz), fmaf(rg, l3, zz)))
                            : make_uint2(0u, 0u);
                    }
                }
                __syncwarp();
                const int s0 = w0 + ks * 2 * TILE;
                u32 b0 = 0u, b1 = 0u;
                if (gr < G)
                {
                    const float2 pa = *(const float2*)&s_sc[gr < G ? gr : 0][s0 + 2 * tq];
                    const float2 pb = *(const float2*)&s_sc[gr < G ? gr : 0][s0 + 2 * tq + 8];
                    b0 = pack_h2(pa.x, pa.y); b1 = pack_h2(pb.x, pb.y);
                }
#pragma unroll
                for (int m = 0; m < D / 16; ++m)
                {
                    u32 a0, a1, a2, a3;
                    ldsm_x4_t(rowA + (u32)(((2 * m + ((lane >> 3) & 1)) ^ (rr & 7)) << 4), a0, a1, a2, a3);
                    mma_16816_a4(acc2[m], a0, a1, a2, a3, b0, b1);
                }
            }
        }
        else if constexpr (TV)
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
                const float4 lv = value_levels<B, T::VSH, VR>(vw, t, s_vt2, (const char*)&s_vt[0][0], vOff, laneOff);
                const float l0 = lv.x, l1 = lv.y, l2 = lv.z, l3 = lv.w;
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
                    float d = h2f((vv >> (16 * sl)) & 0xffff) - fmaf(r, s_vcb[K17 ? code4_at17(vc, tt, c) : code_at<B>(vc, tt, c)], z);
#pragma unroll
                    for (int g = 0; g < G; ++g) atomicAdd(&s_vout[warp][g][c], s_sc[g][tt] * d);
                }
            }
        }
    }
    __syncthreads();
    if constexpr (!TH && !PV)
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int i = 0; i < 4; ++i) s_vout[warp][g][4 * lane + i] += acc[g][i];
    if constexpr (TH)
    {
        __syncwarp();
        const int gr = lane >> 2, tq = lane & 3;
        if (2 * tq < G)
#pragma unroll
            for (int m = 0; m < D / 16; ++m)
            {
                const int c = 16 * m + gr;
                s_vout[warp][2 * tq][c] += acc2[m][0]; s_vout[warp][2 * tq + 1][c] += acc2[m][1];
                s_vout[warp][2 * tq][c + 8] += acc2[m][2]; s_vout[warp][2 * tq + 1][c + 8] += acc2[m][3];
            }
    }
    if constexpr (PV)
    {
        __syncwarp();
        const int gr = lane >> 2, tq = lane & 3;
        if (2 * tq < G)
#pragma unroll
            for (int m = 0; m < D / 16; ++m)
            {
                const int c = pv_channel(m, gr);   // row gr + 8: c + 1
                s_vout[warp][2 * tq][c] += acc2[m][0]; s_vout[warp][2 * tq + 1][c] += acc2[m][1];
                s_vout[warp][2 * tq][c + 1] += acc2[m][2]; s_vout[warp][2 * tq + 1][c + 1] += acc2[m][3];
            }
    }
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
        if constexpr (PV)   // the lanes' partial sums (softmax above)
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int o = 16; o; o >>= 1) { wl[g] += __shfl_xor_sync(FULL, wl[g], o); wpz[g] += __shfl_xor_sync(FULL, wpz[g], o); }
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
{ attn_v7<B, G, KS, VS, KL, (VER >= 8), kpair7(B, VER), vrep7(B, VER), (VER >= 11 && G > 1), (VER == 12 && G > 1), (VER >= 13 && VER <= 14 && G > 1), (VER >= 15 && VER <= 18 && G > 1), (VER >= 16 && VER <= 18 && G > 1), (VER >= 17 && VER <= 18 && G > 1), (VER == 18 && G > 1)>(a, q, kcodes, kslotv, kslotc, kzero, krange, kcb, vcodes, vzr, vslotv, vslotc, vcb, part_acc, part_ml, padded); }
#define NUQ_V7_LAYOUTS(B, G, MINB, VER) NUQ_V7_ANY(B, G, MINB, VER, , KSLOTS, VSLOTS, 0) NUQ_V7_ANY(B, G, MINB, VER, _dense, 0, 0, 0) \
    NUQ_V7_ANY(B, G, MINB, VER, _sparse, 0, 0, 48)

#endif
