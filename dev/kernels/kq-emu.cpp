// Host check of kernel v16-v18 keys (attn_v7.cuh, the text between "BEGIN v16 keys" and "END v16 keys", with v15's
// lookup text before it; dev/kernels/kq-emu.sh extracts both): one whole chunk's scores as the kernel makes them - the
// per-block key table (kq_entry), each warp's rotated query B registers (kq_qb_index), the code words each lane reads
// (kq_word), the prmt lookups (lut16_pairs), the f16x2 FMAs (kq_key) and m16n8k16 with its PTX fragment layouts
// (A: register 0 row gr, k = 2 tq, 2 tq + 1; 1 row gr + 8; 2 row gr, k + 8; 3 row gr + 8, k + 8; B: register 0 k =
// 2 tq, 2 tq + 1 of column gr, 1 k + 8; D: d0, d1 row gr, columns 2 tq, 2 tq + 1, d2, d3 row gr + 8), the scores
// written where the kernel writes them - against attention scores computed plainly in double (key = zero + range x
// level, RoPE at the token's position, adjacent pairs, as decode_common.cuh's rope_theta and CpuReference).
//  1. Exact mode: no rotation (sin 0, cos 1) and small dyadic levels, zeros, ranges and queries, so that every f16
//     step is exact: the scores must equal the reference bit for bit (any wrong token, channel, head or register
//     mapping shows as a mismatch).
//  2. RoPE mode: real rotations at positions up to ~1M, random levels, zeros, ranges and queries: relative L2 error
//     of the scores from the f16 steps (queries rotated once per warp and chunk, key table entries, two rounded f16x2
//     FMAs per key pair); must stay under 2e-3 (v11's f16 keys: ~1e-3 of a score's size per token).
// v17 reads the B registers from padded rows (kq_qb_index17); v18 (g_v18) uses half the table (KQ_ENTRIES18), B columns
// 4-7 for the second half's rotation (kq_qb_index18) and two mmas per slice by offset parity. The helpers come from
// attn_v7.cuh; the loops around them (which lane reads what, where each lane writes its scores) are written out here
// after the kernel's, so a change to the kernel's loop must be made here too.
// prmt.b32, pack_h2 (cvt.rn.f16x2.f32), kq_key (fma.rn.f16x2 twice, each rounding once) and kq_sincos are emulated
// here with the PTX ISA's semantics (_Float16 conversions round to nearest even).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "prmt-emu.h"
static u16 h_bits(double x) { _Float16 h = (_Float16)x; u16 b; __builtin_memcpy(&b, &h, 2); return b; }
static double h_val(u16 b) { _Float16 h; __builtin_memcpy(&h, &b, 2); return (double)h; }
static u32 pack_h2(float lo, float hi) { return h_bits(lo) | ((u32)h_bits(hi) << 16); }
static double lo_of(u32 x) { return h_val((u16)(x & 0xffff)); }
static double hi_of(u32 x) { return h_val((u16)(x >> 16)); }
// fma.rn.f16x2 t = col1 x (p.hi, p.hi) + v; d = col0 x (p.lo, p.lo) + t (one rounding each: products of f16 values
// and their sums are exact in double here).
static u32 kq_key(u32 col0, u32 col1, u32 v, u32 p)
{
    const double l = lo_of(p), h = hi_of(p);
    const u32 t = h_bits(lo_of(col1) * h + lo_of(v)) | ((u32)h_bits(hi_of(col1) * h + hi_of(v)) << 16);
    return h_bits(lo_of(col0) * l + lo_of(t)) | ((u32)h_bits(hi_of(col0) * l + hi_of(t)) << 16);
}
static bool g_norot = false;
static bool g_v17 = false;   // v17's swizzled B-register table (kq_qb_index17, kq_qb_load17)
static bool g_v18 = false;   // v18: one 16-offset table for both halves, B columns 4-7 = the second half's rotation
static void kq_sincos(float x, float& s, float& c)
{
    if (g_norot) { s = 0.f; c = 1.f; return; }
    s = std::sin(x); c = std::cos(x);
}

#include "v16_keys.inc"

struct uint4_ { u32 x, y, z, w; };

static int failures = 0;
static void expect(bool ok, const char* what, long a, long b, double c)
{
    if (!ok && failures++ < 10) std::fprintf(stderr, "mismatch: %s (%ld, %ld, %g)\n", what, a, b, c);
}

// One chunk: codes kc ([tile][word][lane], 32 tiles x 4 words x 32 lanes), levels, per-channel zero and range, G = 4
// scaled queries, chunk position pc. Returns the kernel's scores [G][256] and the reference's.
static void chunk(const std::vector<u32>& kc, const float (&kcb)[16], const std::vector<float>& kz, const std::vector<float>& kr,
                  const std::vector<float>& q, double pc, double log2base, std::vector<double>& got, std::vector<double>& want,
                  std::vector<double>& v11)
{
    const int G = 4;
    float th[64];
    for (int j = 0; j < 64; ++j) th[j] = (float)std::exp2(-2.0 * j / 128 * log2base);
    // the per-block table
    const int entries = g_v18 ? KQ_ENTRIES18 : KQ_ENTRIES;
    std::vector<uint4_> km(entries);
    for (int e = 0; e < entries; ++e) { u32 o[4]; kq_entry(e, th, kr.data(), kz.data(), o); km[e] = {o[0], o[1], o[2], o[3]}; }
    u16 lev[16];
    for (int e = 0; e < 16; ++e) lev[e] = h_bits(kcb[e]);
    u32 klo[4], khi[4];
    lut16_planes(lev, klo, khi);
    got.assign(G * 256, NAN);
    for (int warp = 0; warp < 8; ++warp)
    {
        const int w0 = warp * 32;
        // R(-P) q for P = pc + w0, as the kernel composes it: chunk angles (double, rounded to float) and the warp's
        // offset (float).
        std::vector<u32> qb(8 * KQ_QB17 * 2, 0u);   // v16's 8 x 32 fit in v17's padded rows
        for (int lane = 0; lane < 32; ++lane)
        {
            float rc[2], rs[2], rc16[2], rs16[2];
            for (int p = 0; p < 2; ++p)
            {
                const int j = 2 * lane + p;
                const double thd = std::exp2(-2.0 * j / 128 * log2base);
                float cb = (float)std::cos(pc * thd), sb = (float)std::sin(pc * thd), wc, ws;
                kq_sincos((float)w0 * (float)thd, ws, wc);
                if (g_norot) { cb = 1.f; sb = 0.f; }
                rc[p] = cb * wc - sb * ws; rs[p] = sb * wc + cb * ws;
                float ws16, wc16;   // v18: R(-(P + 16)) as the kernel composes it (the offset w0 + 16 x s_th in float)
                kq_sincos((float)(w0 + 16) * th[j], ws16, wc16);
                rc16[p] = cb * wc16 - sb * ws16; rs16[p] = sb * wc16 + cb * ws16;
            }
            for (int g = 0; g < G; ++g)
            {
                const float* qq = &q[g * 128 + 4 * lane];
                for (int half = 0; half < (g_v18 ? 2 : 1); ++half)
                {
                    const float* c = half ? rc16 : rc;
                    const float* sn = half ? rs16 : rs;
                    const int at = g_v18 ? kq_qb_index18(g, lane, half) : g_v17 ? kq_qb_index17(g, lane) : kq_qb_index(g, lane);
                    expect(at % (g_v17 ? KQ_QB17 : 32) / 16 == half, "B registers of heads 0-3 in lanes 0-15 of their slice (v18: 16-31 the second half's)", g, lane, at);
                    qb[2 * at] = pack_h2(qq[0] * c[0] + qq[1] * sn[0], qq[1] * c[0] - qq[0] * sn[0]);
                    qb[2 * at + 1] = pack_h2(qq[2] * c[1] + qq[3] * sn[1], qq[3] * c[1] - qq[2] * sn[1]);
                }
            }
        }
        if (g_v18)
        {
            // v18's key loop (attn_v7.cuh, "if constexpr (K18)"): per slice one table entry per lane for both halves,
            // two mmas by offset parity (rows gr: the first half's token, rows gr + 8: the second half's).
            double De[16][8] = {}, Do[16][8] = {};
            for (int sl = 0; sl < 8; ++sl)
            {
                double Ae[16][16], Ao[16][16], Bm[16][8];
                for (int lane = 0; lane < 32; ++lane)
                {
                    const int gr = lane >> 2, tq = lane & 3;
                    const u32 k0 = kc[kq_word(w0, 0, lane, sl)], k1 = kc[kq_word(w0, 1, lane, sl)];
                    const uint4_ m0 = km[(sl * 3) * 32 + lane], m1 = km[(sl * 3 + 1) * 32 + lane], mz = km[(sl * 3 + 2) * 32 + lane];
                    u32 p0[4], p1[4];
                    lut16_pairs(klo, khi, k0, p0);
                    lut16_pairs(klo, khi, k1, p1);
                    u32 a[4] = {kq_key(m0.x, m0.y, mz.x, p0[0]), kq_key(m0.x, m0.y, mz.x, p1[0]), kq_key(m0.z, m0.w, mz.y, p0[1]), kq_key(m0.z, m0.w, mz.y, p1[1])};
                    for (int par = 0; par < 2; ++par)
                    {
                        double (&A)[16][16] = par ? Ao : Ae;
                        A[gr][2 * tq] = lo_of(a[0]); A[gr][2 * tq + 1] = hi_of(a[0]);
                        A[gr + 8][2 * tq] = lo_of(a[1]); A[gr + 8][2 * tq + 1] = hi_of(a[1]);
                        A[gr][2 * tq + 8] = lo_of(a[2]); A[gr][2 * tq + 9] = hi_of(a[2]);
                        A[gr + 8][2 * tq + 8] = lo_of(a[3]); A[gr + 8][2 * tq + 9] = hi_of(a[3]);
                        if (par) break;
                        a[0] = kq_key(m1.x, m1.y, mz.z, p0[2]); a[1] = kq_key(m1.x, m1.y, mz.z, p1[2]);
                        a[2] = kq_key(m1.z, m1.w, mz.w, p0[3]); a[3] = kq_key(m1.z, m1.w, mz.w, p1[3]);
                    }
                    const int li = kq_qb_load17(sl, lane);
                    const u32 b0 = qb[2 * li], b1 = qb[2 * li + 1];
                    Bm[2 * tq][gr] = lo_of(b0); Bm[2 * tq + 1][gr] = hi_of(b0);
                    Bm[2 * tq + 8][gr] = lo_of(b1); Bm[2 * tq + 9][gr] = hi_of(b1);
                }
                for (int r = 0; r < 16; ++r)
                    for (int n = 0; n < 8; ++n)
                        for (int k = 0; k < 16; ++k) { De[r][n] += Ae[r][k] * Bm[k][n]; Do[r][n] += Ao[r][k] * Bm[k][n]; }
            }
            for (int lane = 0; lane < 32; ++lane)
            {
                const int gr = lane >> 2, tq = lane & 3, hf = tq >> 1, g0 = 2 * (tq & 1), tok = w0 + 16 * hf + 2 * gr, r = gr + 8 * hf;
                got[g0 * 256 + tok] = De[r][2 * tq]; got[g0 * 256 + tok + 1] = Do[r][2 * tq];
                got[(g0 + 1) * 256 + tok] = De[r][2 * tq + 1]; got[(g0 + 1) * 256 + tok + 1] = Do[r][2 * tq + 1];
            }
            continue;
        }
        for (int hb = 0; hb < 2; ++hb)
        {
            double Dm[16][8] = {};
            for (int sl = 0; sl < 8; ++sl)
            {
                double A[16][16], Bm[16][8];
                for (int lane = 0; lane < 32; ++lane)
                {
                    const int gr = lane >> 2, tq = lane & 3;
                    expect(kq_word(w0, hb, lane, 0) % 4 == 0 && kq_word(w0, hb, lane, 4) == kq_word(w0, hb, lane, 0) + 4,
                           "kq_word: two aligned 16-byte loads", lane, hb, 0);
                    const u32 w = kc[kq_word(w0, hb, lane, sl)];
                    const uint4_ m0 = km[((hb * 8 + sl) * 3) * 32 + lane], m1 = km[((hb * 8 + sl) * 3 + 1) * 32 + lane],
                        mz = km[((hb * 8 + sl) * 3 + 2) * 32 + lane];
                    u32 p[4];
                    lut16_pairs(klo, khi, w, p);
                    const u32 a0 = kq_key(m0.x, m0.y, mz.x, p[0]), a1 = kq_key(m1.x, m1.y, mz.z, p[2]);
                    const u32 a2 = kq_key(m0.z, m0.w, mz.y, p[1]), a3 = kq_key(m1.z, m1.w, mz.w, p[3]);
                    A[gr][2 * tq] = lo_of(a0); A[gr][2 * tq + 1] = hi_of(a0);
                    A[gr + 8][2 * tq] = lo_of(a1); A[gr + 8][2 * tq + 1] = hi_of(a1);
                    A[gr][2 * tq + 8] = lo_of(a2); A[gr][2 * tq + 9] = hi_of(a2);
                    A[gr + 8][2 * tq + 8] = lo_of(a3); A[gr + 8][2 * tq + 9] = hi_of(a3);
                    const int li = g_v17 ? kq_qb_load17(sl, lane) : sl * 32 + lane;
                    const u32 b0 = qb[2 * li], b1 = qb[2 * li + 1];
                    Bm[2 * tq][gr] = lo_of(b0); Bm[2 * tq + 1][gr] = hi_of(b0);
                    Bm[2 * tq + 8][gr] = lo_of(b1); Bm[2 * tq + 9][gr] = hi_of(b1);
                }
                for (int r = 0; r < 16; ++r)
                    for (int n = 0; n < 8; ++n)
                        for (int k = 0; k < 16; ++k) Dm[r][n] += A[r][k] * Bm[k][n];
            }
            for (int lane = 0; lane < 32; ++lane)
            {
                const int gr = lane >> 2, tq = lane & 3;
                if (2 * tq >= G) continue;
                const int tok = w0 + 16 * hb + 2 * gr;
                got[(2 * tq) * 256 + tok] = Dm[gr][2 * tq]; got[(2 * tq) * 256 + tok + 1] = Dm[gr + 8][2 * tq];
                got[(2 * tq + 1) * 256 + tok] = Dm[gr][2 * tq + 1]; got[(2 * tq + 1) * 256 + tok + 1] = Dm[gr + 8][2 * tq + 1];
            }
        }
    }
    // the reference
    want.assign(G * 256, 0.0);
    v11.assign(G * 256, 0.0);
    for (int tt = 0; tt < 256; ++tt)
    {
        double k[128];
        for (int c = 0; c < 128; ++c)
        {
            const int tile = tt / 8, t = tt % 8, ln = c >> 2, i = c & 3, o = (4 * t + i) * 4;
            const int code = (int)((kc[(tile * 4 + (o >> 5)) * 32 + ln] >> (o & 31)) & 15);
            k[c] = (double)kz[c] + (double)kr[c] * (double)kcb[code];
        }
        for (int j = 0; j < 64; ++j)
        {
            const double a = g_norot ? 0.0 : (pc + tt) * std::exp2(-2.0 * j / 128 * log2base), cs = std::cos(a), sn = std::sin(a);
            const double k0 = k[2 * j], k1 = k[2 * j + 1];
            k[2 * j] = k0 * cs - k1 * sn; k[2 * j + 1] = k0 * sn + k1 * cs;
        }
        for (int g = 0; g < G; ++g)
        {
            double s = 0, s11 = 0;
            for (int c = 0; c < 128; ++c)
            {
                s += (double)q[g * 128 + c] * k[c];
                s11 += h_val(h_bits(q[g * 128 + c])) * h_val(h_bits((float)k[c]));   // v11: rotated key and query in f16
            }
            want[g * 256 + tt] = s;
            v11[g * 256 + tt] = s11;
        }
    }
}

// Shared-memory wavefronts of one warp's 8-byte accesses at these byte addresses: two half-warp phases, each as many
// wavefronts as the most distinct 4-byte words one bank is asked for (the hardware's bank-conflict rule).
static int wavefronts8(const int (&addr)[32])
{
    int total = 0;
    for (int half = 0; half < 2; ++half)
    {
        std::vector<std::vector<int>> words(32);
        for (int l = 16 * half; l < 16 * half + 16; ++l)
            for (int w = addr[l] / 4; w < addr[l] / 4 + 2; ++w)
            {
                auto& b = words[w % 32];
                bool seen = false;
                for (int x : b) seen |= x == w;
                if (!seen) b.push_back(w);
            }
        size_t most = 1;
        for (auto& b : words) most = std::max(most, b.size());
        total += (int)most;
    }
    return total;
}

static int run(int version);

int main()
{
    // v17's B-register table: the stores of a head and the loads of a slice, in wavefronts per warp instruction.
    for (int v = 0; v < 2; ++v)
    {
        int st = 0, ld = 0;
        for (int g = 0; g < 4; ++g)
        {
            int a[32];
            for (int lane = 0; lane < 32; ++lane) a[lane] = 8 * (v ? kq_qb_index17(g, lane) : kq_qb_index(g, lane));
            st = std::max(st, wavefronts8(a));
        }
        for (int sl = 0; sl < 8; ++sl)
        {
            int a[32];
            for (int lane = 0; lane < 32; ++lane) a[lane] = 8 * (v ? kq_qb_load17(sl, lane) : sl * 32 + lane);
            ld = std::max(ld, wavefronts8(a));
        }
        std::printf("%s B-register table: %d wavefronts per store (a head), %d per load (a slice); 2 without conflicts\n",
                    v ? "v17" : "v16", st, ld);
        if (v) expect(st == 2 && ld == 2, "v17 B-register table without bank conflicts", st, ld, 0);
    }
    // v17's skewed value codes: the stage copy (vskew17) and its readers (the values pass, code4_at17) against the
    // plain layout, and the values pass's 4-byte loads in wavefronts.
    {
        std::mt19937 r2(17);
        std::vector<u32> plain(32 * 4 * 32), skew(32 * 4 * 32, 0u);
        for (auto& x : plain) x = (u32)r2();
        for (int off = 0; off < (int)plain.size() * 4; off += 16)
            for (int k = 0; k < 4; ++k) skew[(vskew17(off) >> 2) + k] = plain[(off >> 2) + k];
        for (int tt = 0; tt < 256; ++tt)
            for (int c = 0; c < 128; ++c) expect(code4_at17(skew.data(), tt, c) == code4_at(plain.data(), tt, c), "code4_at17", tt, c, 0);
        int w16 = 0, w17 = 0;
        for (int w0 = 0; w0 < 256; w0 += 32)
            for (int ks = 0; ks < 2; ++ks)
                for (int M = 0; M < 4; ++M)
                {
                    std::vector<std::vector<int>> b16(32), b17(32);
                    for (int lane = 0; lane < 32; ++lane)
                    {
                        const int gr = lane >> 2, tq = lane & 3, R = (w0 / 8 + 2 * ks) * 4 + tq;
                        const int a16 = R * 32 + gr + 8 * M, a17 = R * 32 + gr + 8 * ((M + tq) & 3);
                        expect(skew[a17] == plain[a16] && skew[a17 + 128] == plain[a16 + 128], "values pass words", lane, M, 0);
                        auto add = [](std::vector<int>& b, int w) { for (int x : b) if (x == w) return; b.push_back(w); };
                        add(b16[a16 % 32], a16); add(b17[a17 % 32], a17);
                    }
                    for (int k = 0; k < 32; ++k) { w16 = std::max(w16, (int)b16[k].size()); w17 = std::max(w17, (int)b17[k].size()); }
                }
        std::printf("values pass code-word loads: v16 %d wavefronts each, v17 (skewed stage) %d\n", w16, w17);
        expect(w17 == 1, "v17 value code loads without bank conflicts", w17, 0, 0);
    }
    // v18's B-register table: the stores of a (head, half) and the loads of a slice (all 32 lanes hold data now).
    {
        int st = 0, ld = 0;
        for (int g = 0; g < 4; ++g)
            for (int half = 0; half < 2; ++half)
            {
                int a[32];
                for (int lane = 0; lane < 32; ++lane) a[lane] = 8 * kq_qb_index18(g, lane, half);
                st = std::max(st, wavefronts8(a));
            }
        for (int sl = 0; sl < 8; ++sl)
        {
            int a[32];
            for (int lane = 0; lane < 32; ++lane) a[lane] = 8 * kq_qb_load17(sl, lane);
            ld = std::max(ld, wavefronts8(a));
        }
        std::printf("v18 B-register table: %d wavefronts per store (a head and half), %d per load (a slice); 2 without conflicts\n", st, ld);
        expect(st == 2 && ld == 2, "v18 B-register table without bank conflicts", st, ld, 0);
    }
    const int skewFailures = failures;
    int rc = run(16);
    rc |= run(17);
    return run(18) | rc | (skewFailures ? 1 : 0);
}

static int run(int version)
{
    const bool v17 = version >= 17;
    g_v17 = v17;
    g_v18 = version == 18;
    failures = 0;
    std::mt19937 rng(20261207);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    long checked = 0;
    const double log2base = std::log2(10000.0);
    // 1. exact mode: dyadic values whose f16 products and sums are exact.
    g_norot = true;
    for (int rep = 0; rep < 20; ++rep)
    {
        std::vector<u32> kc(32 * 4 * 32);
        for (auto& x : kc) x = (u32)rng();
        float kcb[16];
        for (int e = 0; e < 16; ++e) kcb[e] = (float)((int)(rng() % 33) - 16) / 8.f;
        std::vector<float> kz(128), kr(128), q(4 * 128);
        for (auto& x : kz) x = (float)((int)(rng() % 17) - 8) / 4.f;
        for (auto& x : kr) x = (float)(1 + rng() % 8) / 4.f;
        for (auto& x : q) x = (float)((int)(rng() % 17) - 8) / 16.f;
        std::vector<double> got, want, v11;
        chunk(kc, kcb, kz, kr, q, 0.0, log2base, got, want, v11);
        for (int i = 0; i < 4 * 256; ++i) { expect(got[i] == want[i], "exact scores", rep, i, got[i] - want[i]); ++checked; }
    }
    // 2. RoPE mode: random data, positions from 0 to ~1M.
    g_norot = false;
    double worst = 0, worst11 = 0;
    const double positions[] = {1.0, 257.0, 4097.0, 131073.0 - 256, 1048577.0 - 256};
    for (double pc : positions)
        for (int rep = 0; rep < 3; ++rep)
        {
            std::vector<u32> kc(32 * 4 * 32);
            for (auto& x : kc) x = (u32)rng();
            float kcb[16];
            for (int e = 0; e < 16; ++e) kcb[e] = -1.f + 2.f * e / 15.f + 0.03f * nd(rng);
            std::vector<float> kz(128), kr(128), q(4 * 128);
            for (int c = 0; c < 128; ++c) { kz[c] = 2.f * nd(rng); kr[c] = 0.2f + 3.f * ud(rng) * (c % 17 == 0 ? 4.f : 1.f); }
            for (auto& x : q) x = nd(rng) / std::sqrt(128.f);
            std::vector<double> got, want, v11;
            chunk(kc, kcb, kz, kr, q, pc, log2base, got, want, v11);
            double e2 = 0, w2 = 0, f2 = 0;
            for (int i = 0; i < 4 * 256; ++i)
            {
                e2 += (got[i] - want[i]) * (got[i] - want[i]); w2 += want[i] * want[i]; f2 += (v11[i] - want[i]) * (v11[i] - want[i]);
                ++checked;
            }
            const double rel = std::sqrt(e2 / w2);
            worst = std::max(worst, rel);
            worst11 = std::max(worst11, std::sqrt(f2 / w2));
            expect(rel < 2e-3, "RoPE scores rel L2", (long)pc, rep, rel);
        }
    std::printf("v%d keys: RoPE scores worst rel L2 %.3g (positions up to %.0f); v11's f16 keys and queries on the same data: %.3g\n",
                version, worst, positions[4] + 255, worst11);
    if (failures) { std::printf("FAILED: %d mismatches in %ld checks\n", failures, checked); return 1; }
    std::printf("ok: %ld scores match (exact mode bit for bit, RoPE mode under 2e-3)\n", checked);
    return 0;
}
