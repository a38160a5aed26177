// Bindings for the fused decode step (csrc/decode_cpu.cpp, csrc/decode.cu).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void s1k_bind_decode(py::module_& m) {
  (void)m;  // filled in by the decode family
}
