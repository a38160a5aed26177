// Bindings for the similarity top-k's CPU selection (csrc/topk_cpu.cpp). Python passes
// data_ptr() integers and sizes; it validates everything first (s1kernels/ops/similarity).
#include <pybind11/pybind11.h>

#include <cstdint>

extern "C" int s1k_topk_fold_cpu(const float* scores, int64_t rows, int64_t cols, int64_t ld, const float* rx,
                                 const float* ry, int64_t row0, int64_t col0, int exclude_self, int64_t k,
                                 float* best_s, int64_t* best_i, int transpose, int threads);

namespace py = pybind11;

void s1k_bind_similarity(py::module_& m) {
  m.def(
      "topk_fold_cpu",
      [](uintptr_t scores, int64_t rows, int64_t cols, int64_t ld, uintptr_t rx, uintptr_t ry, int64_t row0,
         int64_t col0, bool exclude_self, int64_t k, uintptr_t best_s, uintptr_t best_i, bool transpose,
         int threads) {
        py::gil_scoped_release release;
        return s1k_topk_fold_cpu(reinterpret_cast<const float*>(scores), rows, cols, ld,
                                 reinterpret_cast<const float*>(rx), reinterpret_cast<const float*>(ry), row0, col0,
                                 exclude_self ? 1 : 0, k, reinterpret_cast<float*>(best_s),
                                 reinterpret_cast<int64_t*>(best_i), transpose ? 1 : 0, threads);
      },
      "topk_fold_cpu(scores_ptr, rows, cols, ld, rx_ptr, ry_ptr, row0, col0, exclude_self, k, best_s_ptr, "
      "best_i_ptr, transpose, threads) -> error code (0 = ok): folds a fp32 score chunk into running top-k "
      "lists, of its rows or (transpose) of its columns (rx/ry 0 for raw inner products). Raw entry point: use s1kernels.ops.similarity.topk_similarity.");
}
