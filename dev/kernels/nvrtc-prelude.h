// What NVRTC gives a kernel without any #include, declared for clang's CUDA front end so that
// dev/kernels/syntax-check.sh can parse the embedded kernels without a CUDA toolkit (-nocudainc -nocudalib).
// Declarations only: the check is -fsyntax-only, nothing is linked. Add a line here when a kernel starts using a
// new intrinsic (the check then says "use of undeclared identifier").
#pragma once

#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#define __restrict__ __restrict

#include <__clang_cuda_builtin_vars.h>

struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
__device__ float2 make_float2(float, float);
__device__ float4 make_float4(float, float, float, float);
__device__ uint2 make_uint2(unsigned int, unsigned int);
__device__ uint4 make_uint4(unsigned int, unsigned int, unsigned int, unsigned int);

// Bit casts and integer intrinsics.
__device__ float __int_as_float(int);
__device__ int __float_as_int(float);
__device__ float __uint_as_float(unsigned int);
__device__ unsigned int __float_as_uint(float);
__device__ unsigned int __funnelshift_r(unsigned int, unsigned int, unsigned int);
__device__ unsigned int __funnelshift_l(unsigned int, unsigned int, unsigned int);
__device__ int __popc(unsigned int);
__device__ int __clz(int);
__device__ int __ffs(int);
__device__ unsigned int __vcmpeq4(unsigned int, unsigned int);
__device__ void __trap();
__device__ unsigned long long __cvta_generic_to_shared(const void*);

// Warp and block synchronisation.
__device__ void __syncthreads();
__device__ int __syncthreads_or(int);
__device__ int __syncthreads_and(int);
__device__ int __syncthreads_count(int);
__device__ void __syncwarp(unsigned int mask = 0xffffffffu);
__device__ void __threadfence();
__device__ unsigned int __ballot_sync(unsigned int, int);
__device__ int __any_sync(unsigned int, int);
__device__ int __all_sync(unsigned int, int);
#define KVQ_SHFL(T) \
    __device__ T __shfl_sync(unsigned int, T, int, int w = 32); \
    __device__ T __shfl_xor_sync(unsigned int, T, int, int w = 32); \
    __device__ T __shfl_up_sync(unsigned int, T, unsigned int, int w = 32); \
    __device__ T __shfl_down_sync(unsigned int, T, unsigned int, int w = 32);
KVQ_SHFL(int) KVQ_SHFL(unsigned int) KVQ_SHFL(float) KVQ_SHFL(double) KVQ_SHFL(long long) KVQ_SHFL(unsigned long long)
#undef KVQ_SHFL

// Atomics.
__device__ float atomicAdd(float*, float);
__device__ double atomicAdd(double*, double);
__device__ int atomicAdd(int*, int);
__device__ unsigned int atomicAdd(unsigned int*, unsigned int);
__device__ unsigned long long atomicAdd(unsigned long long*, unsigned long long);
__device__ int atomicMax(int*, int);
__device__ unsigned int atomicMax(unsigned int*, unsigned int);
__device__ int atomicMin(int*, int);
__device__ int atomicCAS(int*, int, int);
__device__ unsigned int atomicCAS(unsigned int*, unsigned int, unsigned int);
__device__ int atomicExch(int*, int);

// Math: the float and double functions NVRTC declares (CUDA math API), IEEE-rounded intrinsics, fast paths.
__device__ float fmaf(float, float, float);
__device__ double fma(double, double, double);
__device__ float fmaxf(float, float);
__device__ float fminf(float, float);
__device__ double fmax(double, double);
__device__ double fmin(double, double);
__device__ float fabsf(float);
__device__ double fabs(double);
__device__ float expf(float);
__device__ double exp(double);
__device__ float exp2f(float);
__device__ double exp2(double);
__device__ float logf(float);
__device__ double log(double);
__device__ float log2f(float);
__device__ double log2(double);
__device__ float sqrtf(float);
__device__ double sqrt(double);
__device__ float rsqrtf(float);
__device__ float sinf(float);
__device__ float cosf(float);
__device__ double sin(double);
__device__ double cos(double);
__device__ void sincosf(float, float*, float*);
__device__ void __sincosf(float, float*, float*);
__device__ void sincos(double, double*, double*);
__device__ float floorf(float);
__device__ double floor(double);
__device__ float ceilf(float);
__device__ float roundf(float);
__device__ float rintf(float);
__device__ float truncf(float);
__device__ float powf(float, float);
__device__ double pow(double, double);
__device__ float tanhf(float);
__device__ float __expf(float);
__device__ float __logf(float);
__device__ float __sinf(float);
__device__ float __cosf(float);
__device__ float __fadd_rn(float, float);
__device__ float __fsub_rn(float, float);
__device__ float __fmul_rn(float, float);
__device__ float __fdiv_rn(float, float);
__device__ float __fsqrt_rn(float);
__device__ float __frcp_rn(float);
__device__ float __fmaf_rn(float, float, float);
__device__ int min(int, int);
__device__ int max(int, int);
__device__ unsigned int min(unsigned int, unsigned int);
__device__ unsigned int max(unsigned int, unsigned int);
__device__ long long min(long long, long long);
__device__ long long max(long long, long long);
__device__ long min(long, long);
__device__ long max(long, long);
__device__ float min(float, float);
__device__ float max(float, float);
