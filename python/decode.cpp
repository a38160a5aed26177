// Bindings for the fused decode step (csrc/decode_cpu.cpp, csrc/decode.cu). Python passes
// data_ptr() integers, sizes, a dtype code and the CUDA stream; it validates everything first.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "s1k/decode.h"

namespace py = pybind11;

namespace {

// The number of fields of a group of the table (decode_fields.h).
#define S1K_COUNT_FIELD(name, type) +1
constexpr size_t kStateFields = 0 S1K_DECODE_STATE_FIELDS(S1K_COUNT_FIELD);
constexpr size_t kBudgetFields = 0 S1K_DECODE_BUDGET_FIELDS(S1K_COUNT_FIELD);
constexpr size_t kSamplingFields = 0 S1K_DECODE_SAMPLING_FIELDS(S1K_COUNT_FIELD);
#undef S1K_COUNT_FIELD

// Fills DecodeArgs from the three pointer lists Python passes in the table's order; false
// when a list has the wrong length.
bool make_args(s1k::DecodeArgs& a, uintptr_t logits, int dtype, int64_t batch, int64_t V, int64_t row_stride,
               int64_t vocab_size, const std::vector<uintptr_t>& state, const std::vector<uintptr_t>& budget,
               const std::vector<uintptr_t>& sampling, uintptr_t table, const std::vector<int>& lengths, int pad_id,
               uintptr_t tokens, uintptr_t logprobs) {
  if (state.size() != kStateFields || budget.size() != kBudgetFields || sampling.size() != kSamplingFields ||
      lengths.size() != 5)
    return false;
  if (vocab_size > V) return false;
  a = s1k::decode_args_from_addresses(logits, dtype, batch, row_stride, vocab_size, state.data(), budget.data(),
                                      sampling.data(), table, lengths.data(), pad_id, tokens, logprobs);
  return true;
}

// The field names the module was built with, by group: Python refuses a stale build.
py::dict field_names() {
  py::dict groups;
  py::list state, budget, sampling;
#define S1K_STATE_NAME(name, type) state.append(#name);
#define S1K_BUDGET_NAME(name, type) budget.append(#name);
#define S1K_SAMPLING_NAME(name, type) sampling.append(#name);
  S1K_DECODE_STATE_FIELDS(S1K_STATE_NAME)
  S1K_DECODE_BUDGET_FIELDS(S1K_BUDGET_NAME)
  S1K_DECODE_SAMPLING_FIELDS(S1K_SAMPLING_NAME)
#undef S1K_SAMPLING_NAME
#undef S1K_BUDGET_NAME
#undef S1K_STATE_NAME
  groups["state"] = state;
  groups["budget"] = budget;
  groups["sampling"] = sampling;
  return groups;
}

}  // namespace

void s1k_bind_decode(py::module_& m) {
  m.attr("decode_fields") = field_names();
  const char* doc =
      "decode_step_{cpu,cuda}(logits_ptr, dtype_code, batch, V, row_stride, vocab_size, state_ptrs, "
      "budget_ptrs, sampling_ptrs (each in the order of decode_fields), table_ptr, lengths[5], pad_id, "
      "tokens_ptr, logprobs_ptr, stream) -> error code (0 = ok). Raw entry point: use "
      "s1kernels.ops.decode.decode_step.";
  m.def(
      "decode_step_cpu",
      [](uintptr_t logits, int dtype, int64_t batch, int64_t V, int64_t row_stride, int64_t vocab_size,
         std::vector<uintptr_t> state, std::vector<uintptr_t> budget, std::vector<uintptr_t> sampling, uintptr_t table,
         std::vector<int> lengths, int pad_id, uintptr_t tokens, uintptr_t logprobs, uintptr_t /*stream*/) {
        s1k::DecodeArgs a{};
        if (!make_args(a, logits, dtype, batch, V, row_stride, vocab_size, state, budget, sampling, table, lengths,
                       pad_id, tokens, logprobs))
          return static_cast<int>(s1k::kInvalidArgument);
        py::gil_scoped_release release;
        return s1k_decode_step_cpu(&a);
      },
      doc);
  m.def(
      "decode_step_cuda",
      [](uintptr_t logits, int dtype, int64_t batch, int64_t V, int64_t row_stride, int64_t vocab_size,
         std::vector<uintptr_t> state, std::vector<uintptr_t> budget, std::vector<uintptr_t> sampling, uintptr_t table,
         std::vector<int> lengths, int pad_id, uintptr_t tokens, uintptr_t logprobs, uintptr_t stream) {
        s1k::DecodeArgs a{};
        if (!make_args(a, logits, dtype, batch, V, row_stride, vocab_size, state, budget, sampling, table, lengths,
                       pad_id, tokens, logprobs))
          return static_cast<int>(s1k::kInvalidArgument);
#ifdef S1K_WITH_CUDA
        return s1k_decode_step_cuda(&a, reinterpret_cast<void*>(stream));
#else
        (void)stream;
        return static_cast<int>(s1k::kNotCompiled);
#endif
      },
      doc);
}
