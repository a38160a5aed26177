// Bindings for the CPU decode step's fused attention (csrc/attention_cpu.cpp). Python passes
// data_ptr() integers, sizes and strides; it validates dtypes and layouts first
// (s1kernels/model/cpu_attention.py).
#include <pybind11/pybind11.h>

#include <cstdint>

extern "C" int s1k_decode_attention_cpu(const float* qkv, int64_t qkv_stride, const float* cos, const float* sin,
                                        const int64_t* pos, float* k_cache, float* v_cache, int64_t cache_stride,
                                        int64_t S, int64_t B, int64_t H, int64_t Hkv, int64_t D, float scale,
                                        float* out, int64_t out_stride, int threads);

namespace py = pybind11;

void s1k_bind_attention(py::module_& m) {
  m.def(
      "decode_attention_cpu",
      [](uintptr_t qkv, int64_t qkv_stride, uintptr_t cos, uintptr_t sin, uintptr_t pos, uintptr_t k_cache,
         uintptr_t v_cache, int64_t cache_stride, int64_t S, int64_t B, int64_t H, int64_t Hkv, int64_t D, float scale,
         uintptr_t out, int64_t out_stride, int threads) {
        py::gil_scoped_release release;
        return s1k_decode_attention_cpu(
            reinterpret_cast<const float*>(qkv), qkv_stride, reinterpret_cast<const float*>(cos),
            reinterpret_cast<const float*>(sin), reinterpret_cast<const int64_t*>(pos),
            reinterpret_cast<float*>(k_cache), reinterpret_cast<float*>(v_cache), cache_stride, S, B, H, Hkv, D, scale,
            reinterpret_cast<float*>(out), out_stride, threads);
      },
      "decode_attention_cpu(qkv_ptr, qkv_stride, cos_ptr, sin_ptr, pos_ptr, k_cache_ptr, v_cache_ptr, "
      "cache_stride, S, B, H, Hkv, D, scale, out_ptr, out_stride, threads) -> error code (0 = ok). Raw entry "
      "point: use s1kernels.model.cpu_attention.decode_attention.");
}
