// Host SIMT emulation: the fp16 storage type and its exact conversion to float.
#pragma once
#include "cuda_runtime.h"

struct __half {
  unsigned short bits;
};

inline __half __ushort_as_half(unsigned short b) { return __half{b}; }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }

// IEEE binary16 -> float: sign * (exp ? 1024 + man : man) * 2^(max(exp, 1) - 25); exact.
inline float __half2float(__half h) {
  const unsigned sign = h.bits >> 15, exp = (h.bits >> 10) & 0x1Fu, man = h.bits & 0x3FFu;
  float v;
  if (exp == 0x1Fu) v = man ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(exp ? 1024u + man : man), static_cast<int>(exp ? exp : 1) - 25);
  return sign ? -v : v;
}
