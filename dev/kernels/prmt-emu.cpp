// Host check of kernel v15's byte-permute lookup (attn_v7.cuh, the text between "BEGIN v15 lookup" and "END v15
// lookup", which dev/kernels/prmt-emu.sh extracts into v15_lookup.inc): prmt.b32 emulated as the PTX ISA defines it
// (generic mode: selector nibble i, low 16 bits of the selector, picks byte (nibble & 7) of {b, a}; nibble bit 3
// replicates that byte's sign bit instead), then
//  1. lut16_word against a plain table lookup: random 16-level codebooks of any 16-bit patterns (bytes with and
//     without their sign bit set, so that a sign byte leaking through the select would show), every low 16-bit code
//     pattern and random words;
//  2. the mma A operands v15 builds from a staged chunk tile ([tile][word][lane], 4-bit code of token t, lane channel
//     i at bit 16 t + 4 i of the lane's 4 words) against the m16n8k16 A fragment layout (register 0: row gr, k = 2 tq,
//     2 tq + 1; 1: row gr + 8; 2: row gr, k + 8; 3: row gr + 8, k + 8; the smaller k in the low half), with row r of
//     slice m = channel pv_channel(m, r) and k = token in the 16 tokens of the two tiles;
//  3. pv_channel covers the 128 channels once over (slice, row), row r + 8 being row r's channel + 1;
//  4. order_flip (the softmax's warp maximum through redux.sync on integers) keeps the order of floats and infinities;
//  5. code4_at (v15's key outlier pass) reads the code that decode_common.cuh's code_of / code_at read.
// Exit code 0 and "ok" when everything matches.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <cmath>
#include <cstring>
#include <vector>

#include "prmt-emu.h"

#include "v15_lookup.inc"

static int failures = 0;
static void expect(bool ok, const char* what, long a, long b, long c)
{
    if (!ok && failures++ < 10) std::fprintf(stderr, "mismatch: %s (%ld, %ld, %ld)\n", what, a, b, c);
}

int main()
{
    std::mt19937 rng(12345);
    long checked = 0;
    for (int book = 0; book < 64; ++book)
    {
        u16 lev[16];
        for (int e = 0; e < 16; ++e) lev[e] = (u16)rng();
        if (book == 0) for (int e = 0; e < 16; ++e) lev[e] = (u16)(0x8080u | (e << 8) | e);   // every byte's sign bit set
        u32 lo[4], hi[4];
        lut16_planes(lev, lo, hi);
        for (u32 k = 0; k < 65536 + 4096; ++k)
        {
            const u32 w = k < 65536 ? (k | ((u32)rng() << 16)) : (u32)rng();
            u32 h[4];
            lut16_word(lo, hi, w, h);
            for (int i = 0; i < 4; ++i)
            {
                const u32 want = lev[(w >> (4 * i)) & 15] | ((u32)lev[(w >> (4 * i + 16)) & 15] << 16);
                expect(h[i] == want, "lut16_word", book, (long)w, i);
                ++checked;
            }
        }
    }
    // 2. A fragments from a staged 16-token pair of tiles.
    for (int rep = 0; rep < 200; ++rep)
    {
        u16 lev[16];
        for (int e = 0; e < 16; ++e) lev[e] = (u16)rng();
        u32 lo[4], hi[4];
        lut16_planes(lev, lo, hi);
        const int B = 4;
        u32 vc[2 * B * 32];                         // two tiles [tile][word][lane]
        for (auto& x : vc) x = (u32)rng();
        auto code = [&](int c, int t) {             // channel c, token t (0-15) of the two tiles, as code_of reads it
            const int tile = t / 8, tt = t % 8, ln = c >> 2, i = c & 3, o = (4 * tt + i) * B;
            return (int)((vc[(tile * B + (o >> 5)) * 32 + ln] >> (o & 31)) & 15);
        };
        auto A = [&](int m, int r, int k) { return (u32)lev[code(pv_channel(m, r), k)]; };
        for (int lane = 0; lane < 32; ++lane)
        {
            const int gr = lane >> 2, tq = lane & 3;
            const u32* wa = vc + (0 * B + tq) * 32 + gr;      // the kernel's wa with w0 / TILE + 2 ks = 0
            const u32* wb = wa + B * 32;
            for (int M = 0; M < 4; ++M)
            {
                u32 ha[4], hb[4];
                lut16_word(lo, hi, wa[8 * M], ha);
                lut16_word(lo, hi, wb[8 * M], hb);
                const u32 regs[2][4] = {{ha[0], ha[1], hb[0], hb[1]}, {ha[2], ha[3], hb[2], hb[3]}};
                for (int s = 0; s < 2; ++s)
                {
                    const int m = 2 * M + s;
                    const int rows[4] = {gr, gr + 8, gr, gr + 8}, ks[4] = {2 * tq, 2 * tq, 2 * tq + 8, 2 * tq + 8};
                    for (int j = 0; j < 4; ++j)
                    {
                        const u32 want = A(m, rows[j], ks[j]) | (A(m, rows[j], ks[j] + 1) << 16);
                        expect(regs[s][j] == want, "A fragment", m, lane, j);
                        ++checked;
                    }
                }
            }
        }
    }
    // 3. pv_channel is a bijection of (slice, row) onto the 128 channels.
    int seen[128] = {0};
    for (int m = 0; m < 8; ++m)
        for (int r = 0; r < 16; ++r)
        {
            const int c = pv_channel(m, r);
            if (c < 0 || c >= 128) { expect(false, "pv_channel range", m, r, c); continue; }
            ++seen[c];
            if (r < 8) expect(pv_channel(m, r + 8) == c + 1, "row r + 8 is channel + 1 (the kernel's write-back)", m, r, c);
        }
    for (int c = 0; c < 128; ++c) expect(seen[c] == 1, "pv_channel once", c, seen[c], 0);
    // 5. code4_at (the key outlier pass) against code_of's bit stream on a random chunk of 4-bit codes.
    {
        std::vector<u32> kc(32 * 4 * 32);   // 32 tiles x 4 words x 32 lanes
        for (auto& x : kc) x = (u32)rng();
        for (int tt = 0; tt < 256; ++tt)
            for (int c = 0; c < 128; ++c)
            {
                const int tile = tt / 8, t = tt % 8, ln = c >> 2, i = c & 3, o = (4 * t + i) * 4;
                const int want = (int)((kc[(tile * 4 + (o >> 5)) * 32 + ln] >> (o & 31)) & 15);
                expect(code4_at(kc.data(), tt, c) == want, "code4_at", tt, c, want);
                ++checked;
            }
    }
    // 4. order_flip (warp_max's integer key): an involution that orders floats and infinities as the floats.
    {
        std::vector<float> xs = {-INFINITY, -1e30f, -2.5f, -1.f, -1e-30f, -0.f, 0.f, 1e-30f, 0.5f, 1.f, 3.f, 1e30f, INFINITY};
        for (int i = 0; i < 20000; ++i) xs.push_back(std::ldexp((float)rng() / 4294967296.f - 0.5f, (int)(rng() % 60) - 30));
        auto key = [](float f) { int i; std::memcpy(&i, &f, 4); return order_flip(i); };
        for (size_t i = 0; i < xs.size(); ++i)
        {
            int k = key(xs[i]), back = order_flip(k);
            float f; std::memcpy(&f, &back, 4);
            expect(std::memcmp(&f, &xs[i], 4) == 0, "order_flip involution", (long)i, 0, 0);
            for (size_t j = 0; j < 13; ++j)
                expect((xs[i] < xs[j]) == (k < key(xs[j])) || (xs[i] == xs[j]), "order_flip order", (long)i, (long)j, 0);
            ++checked;
        }
    }
    if (failures) { std::printf("FAILED: %d mismatches in %ld checks\n", failures, checked); return 1; }
    std::printf("ok: %ld lookups and fragment registers match\n", checked);
    return 0;
}
