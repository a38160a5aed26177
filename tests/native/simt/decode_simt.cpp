// csrc/decode.cu compiled by the host compiler under the SIMT emulation (simt.h), behind a C
// entry point for ctypes (tests/simt_harness.py). The kernel file is S1K_SIMT_KERNEL, so that
// the mutation check (bench/simt_mutations.py) can build altered copies of it.
//
// Built with -D__CUDACC__ -D__CUDA_ARCH__=900: the kernel and the shared headers take their
// device branches (fp32 Gumbel noise, __float2ull_rn, __umulhi), as under nvcc.
#include <cstdint>

#ifndef S1K_SIMT_KERNEL
#error "define S1K_SIMT_KERNEL as the path of the kernel source"
#endif
#include S1K_SIMT_KERNEL

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

// The pointer lists are in the order of s1kernels/ops/decode/native.py (POINTER_GROUPS), as
// the pybind11 entry points take them. Returns the entry point's status; on an emulation
// error, the message is simt_last_error().
extern "C" __attribute__((visibility("default"))) int simt_decode_step(uintptr_t logits, int dtype, int64_t batch, int64_t row_stride, int64_t vocab_size,
                                const uintptr_t* state, const uintptr_t* budget, const uintptr_t* sampling,
                                uintptr_t table, const int32_t* lengths, int32_t pad_id, uintptr_t tokens,
                                uintptr_t logprobs, unsigned force_cluster, uint64_t schedule_seed,
                                unsigned* cluster_used) {
  s1k::DecodeArgs a{};
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
  simt::config.force_cluster = force_cluster;
  simt::config.schedule_seed = schedule_seed;
  simt::last_cluster = 0;
  simt::last_error_message.clear();
  const int code = s1k_decode_step_cuda(&a, nullptr);
  if (cluster_used) *cluster_used = simt::last_cluster;
  return code;
}

extern "C" __attribute__((visibility("default"))) const char* simt_last_error() { return simt::last_error_message.c_str(); }
