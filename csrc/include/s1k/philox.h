// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator, so any element's random word is computed directly from
// (key, counter) with no state to carry between steps or threads. Shared by the CPU twin and
// the CUDA kernel; s1kernels/ops/decode/reference.py implements the same function in torch int64 ops.
#pragma once
#include <cstdint>

#include "s1k/common.h"

namespace s1k {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
// Counter word 3 of the decode sampler's stream (s1kernels/ops/decode/contract.py: PHILOX_TAG).
constexpr uint32_t kDecodePhiloxTag = 0x53314B44u;

struct Philox4 {
  uint32_t w[4];
};

S1K_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

S1K_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kPhiloxM0, c0, hi0, lo0);
    philox_mulhilo(kPhiloxM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The four words of the decode stream for vocabulary group `group` (ids 4*group .. 4*group+3)
// of a row with this seed at this step. Depends on nothing else: not the batch position.
S1K_HD Philox4 decode_philox_group(uint64_t seed, uint64_t step, uint32_t group) {
  return philox4x32_10(group, static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), kDecodePhiloxTag,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Word j of a Philox output without dynamic register indexing (which spills to local memory).
S1K_HD uint32_t philox_word(const Philox4& p, int j) {
  return j == 0 ? p.w[0] : j == 1 ? p.w[1] : j == 2 ? p.w[2] : p.w[3];
}

// Uniform in (0, 1) from a random word: ((w >> 9) + 0.5) / 2^23, exact in fp32 and fp64.
template <class T>
S1K_HD T uniform_from_word(uint32_t w) {
  return (static_cast<T>(w >> 9) + static_cast<T>(0.5)) * static_cast<T>(1.0 / 8388608.0);
}

}  // namespace s1k
