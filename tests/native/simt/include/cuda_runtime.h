// Host SIMT emulation (tests/native/simt/simt.h): the CUDA runtime and device vocabulary a
// kernel source uses, mapped onto the emulator. Found before the real CUDA headers because the
// emulation build puts this folder first on the include path; never used by nvcc.
#pragma once
#include "../simt.h"

// ------------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A kernel declares shared memory through S1K_SHARED (s1k/common.h), which the emulation
// turns into a slot of the current CTA's arena.
#define S1K_SHARED(T, name) T& name = *::simt::shared_slot<T>([] {})

// ------------------------------------------------------------------ indices
using uint3 = simt::uint3;
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
#define threadIdx (::simt::cur_thread().thread_idx)
#define blockIdx (::simt::cur_thread().block_idx)
// (variables, not macros: launch configurations have members of the same names)
inline const simt::uint3& blockDim = simt::g_block;
inline const simt::uint3& gridDim = simt::g_grid;

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

// ------------------------------------------------------------------ barriers and warp collectives
inline void __syncthreads() { simt::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::collective(simt::Op::kSyncWarp, mask, 0); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  if (width != 32) simt::fail("__shfl_sync: only width 32 is emulated");
  return simt::from_bits<T>(simt::collective(simt::Op::kShfl, mask, simt::to_bits(v), src));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  if (width != 32) simt::fail("__shfl_up_sync: only width 32 is emulated");
  return simt::from_bits<T>(simt::collective(simt::Op::kShflUp, mask, simt::to_bits(v), static_cast<int>(delta)));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  if (width != 32) simt::fail("__shfl_xor_sync: only width 32 is emulated");
  return simt::from_bits<T>(simt::collective(simt::Op::kShflXor, mask, simt::to_bits(v), lane_mask));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(simt::collective(simt::Op::kBallot, mask, pred != 0));
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(simt::collective(simt::Op::kAny, mask, pred != 0));
}
template <class T>
unsigned __match_any_sync(unsigned mask, T v) {
  return static_cast<unsigned>(simt::collective(simt::Op::kMatchAny, mask, simt::to_bits(v)));
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  return static_cast<unsigned>(simt::collective(simt::Op::kReduceAdd, mask, v));
}

// ------------------------------------------------------------------ integer and float intrinsics
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
// The GPU's __expf is an approximation (ex2.approx); the emulation uses the accurate expf.
inline float __expf(float x) { return expf(x); }
inline float __uint_as_float(unsigned b) { return simt::from_bits<float>(b); }
inline unsigned __float_as_uint(float f) { return static_cast<unsigned>(simt::to_bits(f)); }
inline unsigned long long __float2ull_rn(float f) {  // round to nearest even (the default rounding mode)
  return static_cast<unsigned long long>(std::nearbyint(static_cast<double>(f)));
}

// ------------------------------------------------------------------ runtime API
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 719 };
using cudaStream_t = void*;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaLaunchAttributeID { cudaLaunchAttributeClusterDimension = 4 };
union cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
  char pad[64];
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};

namespace simt {
inline cudaError_t last_launch_error = cudaSuccess;
}

inline cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
  *value = simt::config.sm_count;
  return cudaSuccess;
}
inline cudaError_t cudaPeekAtLastError() { return simt::last_launch_error; }
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : simt::last_error_message.c_str();
}

// Runs the kernel to completion under the emulator (the stream is ignored: it is synchronous).
template <class... P, class... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* cfg, void (*kernel)(P...), A&&... args) {
  unsigned cluster = 1;
  for (unsigned i = 0; i < cfg->numAttrs; ++i)
    if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) {
      if (cfg->attrs[i].val.clusterDim.y != 1 || cfg->attrs[i].val.clusterDim.z != 1) return cudaErrorInvalidValue;
      cluster = cfg->attrs[i].val.clusterDim.x;
    }
  const std::function<void()> body = [&] { kernel(args...); };
  const bool ok = simt::launch(simt::uint3{cfg->gridDim.x, cfg->gridDim.y, cfg->gridDim.z},
                               simt::uint3{cfg->blockDim.x, cfg->blockDim.y, cfg->blockDim.z}, cluster, body);
  simt::last_launch_error = ok ? cudaSuccess : cudaErrorLaunchFailure;
  return simt::last_launch_error;
}
