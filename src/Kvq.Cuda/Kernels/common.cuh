// Shared by every kernel file: the short integer names, the warp mask, +infinity without <cmath>, and the f16
// conversions the caches use (bit-exact with the CPU's Half: round to nearest even). NVRTC gets this file as an
// include header from KernelLoader (KernelSources.Headers); the cubin cache key covers its text.
#ifndef KVQ_COMMON_CUH
#define KVQ_COMMON_CUH

#define FULL 0xffffffffu
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

#endif
