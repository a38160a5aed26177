// Bindings for the fused decode step (csrc/decode_cpu.cpp, csrc/decode.cu). Python passes
// data_ptr() integers, sizes, a dtype code and the CUDA stream; it validates everything first.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "s1k/decode.h"

namespace py = pybind11;

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// Fills DecodeArgs from the flat lists decode.py passes; false when a list has the wrong length.
bool make_args(s1k::DecodeArgs& a, uintptr_t logits, int dtype, int64_t batch, int64_t V, int64_t row_stride,
               int64_t vocab_size, const std::vector<uintptr_t>& state, const std::vector<uintptr_t>& budget,
               const std::vector<uintptr_t>& sampling, uintptr_t table, const std::vector<int>& lengths, int pad_id,
               uintptr_t tokens, uintptr_t logprobs) {
  if (state.size() != 9 || budget.size() != 5 || sampling.size() != 5 || lengths.size() != 5) return false;
  if (vocab_size > V) return false;
  a.logits = ptr<const void>(logits);
  a.dtype = dtype;
  a.batch = batch;
  a.row_stride = row_stride;
  a.vocab_size = vocab_size;
  a.phase = ptr<int32_t>(state[0]);
  a.thinking_tokens = ptr<int32_t>(state[1]);
  a.waits_used = ptr<int32_t>(state[2]);
  a.inject_kind = ptr<int32_t>(state[3]);
  a.inject_pos = ptr<int32_t>(state[4]);
  a.answer_tokens = ptr<int32_t>(state[5]);
  a.error = ptr<int32_t>(state[6]);
  a.event = ptr<int32_t>(state[7]);
  a.step = ptr<int64_t>(state[8]);
  a.min_thinking_tokens = ptr<const int32_t>(budget[0]);
  a.max_thinking_tokens = ptr<const int32_t>(budget[1]);
  a.num_waits = ptr<const int32_t>(budget[2]);
  a.max_answer_tokens = ptr<const int32_t>(budget[3]);
  a.mode = ptr<const int32_t>(budget[4]);
  a.temperature = ptr<const float>(sampling[0]);
  a.top_k = ptr<const int32_t>(sampling[1]);
  a.top_p = ptr<const float>(sampling[2]);
  a.min_p = ptr<const float>(sampling[3]);
  a.seed = ptr<const int64_t>(sampling[4]);
  a.table = ptr<const int32_t>(table);
  for (int i = 0; i < 5; ++i) a.lengths[i] = lengths[i];
  a.pad_id = pad_id;
  a.tokens = ptr<int64_t>(tokens);
  a.logprobs = ptr<float>(logprobs);
  return true;
}

}  // namespace

void s1k_bind_decode(py::module_& m) {
  const char* doc =
      "decode_step_{cpu,cuda}(logits_ptr, dtype_code, batch, V, row_stride, vocab_size, state_ptrs[9], "
      "budget_ptrs[5], sampling_ptrs[5], table_ptr, lengths[5], pad_id, tokens_ptr, logprobs_ptr, stream) -> "
      "error code (0 = ok). Raw entry point: use s1kernels.ops.decode.decode_step.";
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
