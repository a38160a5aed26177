// Sampling math shared by the CPU twin and the CUDA kernel. The definitions (also in the
// docstring of s1kernels/ops/decode/__init__.py, whose torch reference (reference.py) follows them):
//
//   greedy (temperature 0): the first index of the maximum allowed logit.
//   z_i = (x_i - max) / T over the allowed ids (ids < vocab_size, minus the masked ones).
//   top-k:  keep x_i >= the k-th largest allowed logit (ties at the threshold kept).
//   top-p:  keep x_i >= t, t the largest logit value whose mass {x >= t} of softmax(z) over
//           the top-k set reaches top_p * (mass of the top-k set).
//   min-p:  keep z_i >= log(min_p).
//   draw:   argmax over kept ids of z_i + g_i, g_i = -log(-log(u_i)) (Gumbel-max: a sample of
//           softmax(z) restricted to the kept set), u_i from the row's Philox stream.
//
// Every filter is a threshold on the logit value, which is what lets the GPU find it by a
// radix select over the row instead of sorting it. The CPU twin computes in fp64 (`double`),
// the CUDA kernel in fp32.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "s1k/common.h"
#include "s1k/philox.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace s1k {

// Logit storage types; the numbers are s1kernels/ops/decode/native.py's _DTYPE_CODE.
enum LogitDtype : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

S1K_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

S1K_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
#endif
}

S1K_HD float bf16_bits_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// IEEE half -> float, exact for every input (normals, subnormals, inf, nan).
S1K_HD float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // subnormal: renormalise the mantissa
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    man &= 0x3FFu;
    return bits_to_float(sign | ((112u - e) << 23) | (man << 13));
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Monotone map float -> uint32 (a < b  <=>  key(a) < key(b)); -0 is folded onto +0 so that
// equal values get equal keys. NaN never reaches it (such rows are errors).
S1K_HD uint32_t float_key(float f) {
  uint32_t b = float_to_bits(f);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

S1K_HD float key_to_float(uint32_t k) { return bits_to_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k); }

// Completes a radix-select prefix (the high bits fixed by `mask`) into the key of the values
// in that bucket, for storage types whose float image has zero low mantissa bits: positive
// values have zero low key bits, negative values all-ones (the key of a negative is ~bits).
S1K_HD uint32_t complete_key(uint32_t prefix, uint32_t mask) {
  return (prefix & 0x80000000u) ? prefix : (prefix | ~mask);
}

// How many 8-bit digits (from the top) tell apart every float image of a storage type:
// bf16 -> 16 significant bits, fp16 -> 24 (its float image has 13 zero low bits), fp32 -> 32.
S1K_HD int radix_digits(int32_t dtype) { return dtype == kBFloat16 ? 2 : dtype == kFloat16 ? 3 : 4; }

// Gumbel noise -log(-log(u)), u = uniform_from_word(w). The device computes -log(u) as
// -log1p(-(1 - u)) with 1 - u exact, because the fast logf is inaccurate for u near 1.
template <class T>
S1K_HD T gumbel_from_word(uint32_t w) {
#if defined(__CUDA_ARCH__)
  const float one_minus_u = (static_cast<float>(8388607u - (w >> 9)) + 0.5f) * (1.0f / 8388608.0f);
  return static_cast<T>(-logf(-log1pf(-one_minus_u)));
#else
  const T u = uniform_from_word<T>(w);
  return -std::log(-std::log(u));
#endif
}

}  // namespace s1k
