// Shared by the CPU twins and the CUDA kernels: portable qualifiers and error codes.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define S1K_HD __host__ __device__ __forceinline__
#else
#define S1K_HD inline
#endif

// A kernel's __shared__ variable. The host SIMT emulation (tests/native/simt) defines it first,
// as a slot of the emulated CTA's shared memory.
#ifndef S1K_SHARED
#define S1K_SHARED(T, name) __shared__ T name
#endif

namespace s1k {

// Error codes returned by every extern "C" entry point (0 = success).
enum Status : int {
  kOk = 0,
  kInvalidArgument = 1,
  kCudaError = 2,
  kNotCompiled = 3,
};

}  // namespace s1k
