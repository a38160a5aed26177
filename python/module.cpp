// pybind11 module s1kernels._C: thin bindings over the extern "C" entry points in csrc/.
// Each family registers its functions from its own bindings file (python/<family>.cpp).
#include <pybind11/pybind11.h>

#include <string>

#include "s1k/common.h"

namespace py = pybind11;

#ifdef S1K_WITH_CUDA
extern "C" int s1k_cuda_device_count(int* count);
extern "C" const char* s1k_cuda_last_error_string();
#endif

void s1k_bind_decode(py::module_& m);
void s1k_bind_similarity(py::module_& m);
void s1k_bind_attention(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "s1kernels native kernels (CPU twins always; CUDA when built with nvcc)";
  m.attr("source_digest") = std::string(S1K_SOURCE_DIGEST);
#ifdef S1K_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("cuda_archs") = std::string(S1K_CUDA_ARCHS);
  m.def("cuda_device_count", []() {
    int n = 0;
    s1k_cuda_device_count(&n);
    return n;
  });
  m.def("cuda_last_error", []() { return std::string(s1k_cuda_last_error_string()); });
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_archs") = std::string();
  m.def("cuda_device_count", []() { return 0; });
  m.def("cuda_last_error", []() { return std::string("s1kernels was built without CUDA"); });
#endif
  s1k_bind_decode(m);
  s1k_bind_similarity(m);
  s1k_bind_attention(m);
}
