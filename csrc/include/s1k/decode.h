// Arguments of the fused decode step, shared by the CPU twin and the CUDA entry point.
// Every pointer is to memory on the device that runs the step (host memory for the twin).
#pragma once
#include <cstdint>

#include "s1k/budget_forcing.h"
#include "s1k/common.h"
#include "s1k/decode_fields.h"
#include "s1k/sampling.h"

namespace s1k {

struct DecodeArgs {
  const void* logits;  // [batch, row_stride] of `dtype`; columns >= vocab_size never read
  int32_t dtype;       // LogitDtype
  int64_t batch, row_stride, vocab_size;
  // one [batch] array per field of the table (decode_fields.h): the state is updated in
  // place, the budget and the sampling parameters are read only
#define S1K_MUTABLE_FIELD(name, type) type* name;
#define S1K_CONST_FIELD(name, type) const type* name;
  S1K_DECODE_STATE_FIELDS(S1K_MUTABLE_FIELD)
  S1K_DECODE_BUDGET_FIELDS(S1K_CONST_FIELD)
  S1K_DECODE_SAMPLING_FIELDS(S1K_CONST_FIELD)
#undef S1K_MUTABLE_FIELD
#undef S1K_CONST_FIELD
  // forcing: the concatenated table and its five lengths (end, delimiter, wait, exit, eos)
  const int32_t* table;
  int32_t lengths[5];
  int32_t pad_id;
  // outputs
  int64_t* tokens;
  float* logprobs;
};

S1K_HD ForcingTable forcing_table(const DecodeArgs& a, const int32_t* ids) {
  return ForcingTable{ids, a.lengths[0], a.lengths[1], a.lengths[2], a.lengths[3], a.lengths[4], a.pad_id};
}

S1K_HD RowState load_row_state(const DecodeArgs& a, int64_t r) {
  return RowState{a.phase[r], a.thinking_tokens[r], a.waits_used[r], a.inject_kind[r],
                  a.inject_pos[r], a.answer_tokens[r], a.error[r], a.event[r]};
}

S1K_HD void store_row_state(const DecodeArgs& a, int64_t r, const RowState& s) {
  a.phase[r] = s.phase;
  a.thinking_tokens[r] = s.thinking_tokens;
  a.waits_used[r] = s.waits_used;
  a.inject_kind[r] = s.inject_kind;
  a.inject_pos[r] = s.inject_pos;
  a.answer_tokens[r] = s.answer_tokens;
  a.error[r] = s.error;
  a.event[r] = s.event;
  a.step[r] += 1;
}

S1K_HD RowBudget load_row_budget(const DecodeArgs& a, int64_t r) {
  return RowBudget{a.min_thinking_tokens[r], a.max_thinking_tokens[r], a.num_waits[r], a.max_answer_tokens[r], a.mode[r]};
}

// DecodeArgs from raw addresses, as the bindings (python/decode.cpp) and the SIMT harness
// (tests/native/simt/decode_simt.cpp) receive them: the three pointer lists in the field
// table's order (the macros visit the fields in that order), the five forcing lengths.
inline DecodeArgs decode_args_from_addresses(uintptr_t logits, int32_t dtype, int64_t batch, int64_t row_stride,
                                             int64_t vocab_size, const uintptr_t* state, const uintptr_t* budget,
                                             const uintptr_t* sampling, uintptr_t table, const int32_t* lengths,
                                             int32_t pad_id, uintptr_t tokens, uintptr_t logprobs) {
  DecodeArgs a{};
  a.logits = reinterpret_cast<const void*>(logits);
  a.dtype = dtype;
  a.batch = batch;
  a.row_stride = row_stride;
  a.vocab_size = vocab_size;
  size_t i = 0;
#define S1K_FILL(list, name, type) a.name = reinterpret_cast<type*>(list[i++]);
#define S1K_FILL_STATE(name, type) S1K_FILL(state, name, type)
#define S1K_FILL_BUDGET(name, type) S1K_FILL(budget, name, const type)
#define S1K_FILL_SAMPLING(name, type) S1K_FILL(sampling, name, const type)
  S1K_DECODE_STATE_FIELDS(S1K_FILL_STATE)
  i = 0;
  S1K_DECODE_BUDGET_FIELDS(S1K_FILL_BUDGET)
  i = 0;
  S1K_DECODE_SAMPLING_FIELDS(S1K_FILL_SAMPLING)
#undef S1K_FILL_SAMPLING
#undef S1K_FILL_BUDGET
#undef S1K_FILL_STATE
#undef S1K_FILL
  a.table = reinterpret_cast<const int32_t*>(table);
  for (int k = 0; k < 5; ++k) a.lengths[k] = lengths[k];
  a.pad_id = pad_id;
  a.tokens = reinterpret_cast<int64_t*>(tokens);
  a.logprobs = reinterpret_cast<float*>(logprobs);
  return a;
}

// Checks what can be checked without reading device memory; kInvalidArgument on failure.
inline int validate_decode_args(const DecodeArgs& a) {
  if (!a.logits || !a.table || !a.tokens || !a.logprobs) return kInvalidArgument;
#define S1K_NULL_FIELD(name, type) \
  if (!a.name) return kInvalidArgument;
  S1K_DECODE_STATE_FIELDS(S1K_NULL_FIELD)
  S1K_DECODE_BUDGET_FIELDS(S1K_NULL_FIELD)
  S1K_DECODE_SAMPLING_FIELDS(S1K_NULL_FIELD)
#undef S1K_NULL_FIELD
  if (a.dtype != kFloat32 && a.dtype != kFloat16 && a.dtype != kBFloat16) return kInvalidArgument;
  if (a.batch < 1 || a.vocab_size < 1 || a.row_stride < a.vocab_size || a.vocab_size > INT32_MAX) return kInvalidArgument;
  for (int i = 0; i < 5; ++i)
    if (a.lengths[i] < 0) return kInvalidArgument;
  if (a.lengths[0] < 1 || a.lengths[2] < 1 || a.lengths[3] < 1 || a.lengths[4] < 1) return kInvalidArgument;
  if (a.lengths[0] + a.lengths[4] > kMaxStopIds) return kInvalidArgument;
  if (a.pad_id < 0) return kInvalidArgument;
  return kOk;
}

}  // namespace s1k

extern "C" int s1k_decode_step_cpu(const s1k::DecodeArgs* args);
extern "C" int s1k_decode_step_cuda(const s1k::DecodeArgs* args, void* stream);
