// Host SIMT emulation: the bf16 storage type and its conversions.
#pragma once
#include "cuda_runtime.h"

struct __nv_bfloat16 {
  unsigned short bits;
};

inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float(static_cast<unsigned>(h.bits) << 16); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return __nv_bfloat16{b}; }
// Round to nearest even; NaN stays NaN.
inline __nv_bfloat16 __float2bfloat16(float f) {
  const unsigned b = __float_as_uint(f);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return __nv_bfloat16{static_cast<unsigned short>((b >> 16) | 0x40u)};
  return __nv_bfloat16{static_cast<unsigned short>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16)};
}
