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

#define S1K_SIMT_EXPORT extern "C" __attribute__((visibility("default")))

// The three pointer lists are in the order of the field table (s1kernels/ops/decode/fields.py,
// csrc/include/s1k/decode_fields.h), as the bindings (python/decode.cpp) take them. Returns the
// entry point's status; on an emulation error, the message is simt_last_error().
S1K_SIMT_EXPORT int simt_decode_step(uintptr_t logits, int dtype, int64_t batch, int64_t row_stride,
                                     int64_t vocab_size, const uintptr_t* state, const uintptr_t* budget,
                                     const uintptr_t* sampling, uintptr_t table, const int32_t* lengths,
                                     int32_t pad_id, uintptr_t tokens, uintptr_t logprobs, unsigned force_cluster,
                                     uint64_t schedule_seed, unsigned* cluster_used) {
  const s1k::DecodeArgs a = s1k::decode_args_from_addresses(logits, dtype, batch, row_stride, vocab_size, state, budget,
                                                            sampling, table, lengths, pad_id, tokens, logprobs);
  simt::config.force_cluster = force_cluster;
  simt::config.schedule_seed = schedule_seed;
  simt::last_cluster = 0;
  simt::last_error_message.clear();
  const int code = s1k_decode_step_cuda(&a, nullptr);
  if (cluster_used) *cluster_used = simt::last_cluster;
  return code;
}

S1K_SIMT_EXPORT const char* simt_last_error() { return simt::last_error_message.c_str(); }

// The field table this library was built with, "state:a,b;budget:...;sampling:..." (the harness
// refuses a build from another table, as native.py refuses a stale extension).
S1K_SIMT_EXPORT const char* simt_decode_fields() {
#define S1K_NAME(name, type) #name ","
  return "state:" S1K_DECODE_STATE_FIELDS(S1K_NAME) ";budget:" S1K_DECODE_BUDGET_FIELDS(S1K_NAME) ";sampling:"
      S1K_DECODE_SAMPLING_FIELDS(S1K_NAME);
#undef S1K_NAME
}
