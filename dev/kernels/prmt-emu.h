// Shared by the host emulations of the kernels' byte-permute code (prmt-emu.cpp, kq-emu.cpp): the CUDA qualifiers
// the extracted kernel text uses, made plain, and prmt.b32 (default mode) with the PTX ISA's semantics: each selector
// nibble picks one of the 8 bytes of {b, a}; bit 3 replicates that byte's sign bit.
#pragma once
#include <cstdint>

typedef uint32_t u32;
typedef uint16_t u16;
#define __device__
#define __forceinline__ inline

static u32 prmt32(u32 a, u32 b, u32 s)
{
    const uint64_t src = ((uint64_t)b << 32) | a;
    u32 d = 0;
    for (int i = 0; i < 4; ++i)
    {
        const u32 nib = (s >> (4 * i)) & 0xf;
        u32 byte = (u32)(src >> (8 * (nib & 7))) & 0xff;
        if (nib & 8) byte = (byte & 0x80) ? 0xff : 0x00;
        d |= byte << (8 * i);
    }
    return d;
}
