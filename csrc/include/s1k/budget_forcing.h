// The budget-forcing state machine of one batch row, written once for the CPU twin
// (csrc/decode_cpu.cpp) and the CUDA kernel (csrc/decode.cu). s1kernels/ops/decode/ holds the
// torch reference of the same rules (reference.py) and the numbers of every enum below (contract.py).
//
// A step is split in two around sampling: plan_step() decides whether the row emits a
// forced token (pad, or the next token of an injected sequence) or samples, and with
// which ids masked; finish_step() takes the sampled token and moves the row on.
#pragma once
#include <cstdint>

#include "s1k/common.h"

namespace s1k {

enum Phase : int32_t { kThinking = 0, kAnswer = 1, kDone = 2 };
enum InjectKind : int32_t { kInjectNone = 0, kInjectWait = 1, kInjectDelimiter = 2, kInjectExit = 3 };
enum Event : int32_t { kEventPad = 0, kEventSampled = 1, kEventWait = 2, kEventDelimiter = 3, kEventExit = 4, kEventError = 5 };
enum Mode : int32_t { kModeWait = 0, kModeSuppress = 1 };
enum ErrorBits : int32_t { kErrorNonFinite = 1, kErrorNoToken = 2 };

// At most this many end-of-thinking + EOS ids (the kernel keeps them in shared memory).
constexpr int kMaxStopIds = 16;

struct RowState {
  int32_t phase, thinking_tokens, waits_used, inject_kind, inject_pos, answer_tokens, error, event;
};

struct RowBudget {
  int32_t min_thinking_tokens, max_thinking_tokens, num_waits, max_answer_tokens, mode;
};

// The five token lists, concatenated in one table: end, delimiter completion, wait, exit, eos.
struct ForcingTable {
  const int32_t* ids;
  int32_t n_end, n_delim, n_wait, n_exit, n_eos;
  int32_t pad_id;

  S1K_HD int32_t off_end() const { return 0; }
  S1K_HD int32_t off_delim() const { return n_end; }
  S1K_HD int32_t off_wait() const { return n_end + n_delim; }
  S1K_HD int32_t off_exit() const { return n_end + n_delim + n_wait; }
  S1K_HD int32_t off_eos() const { return n_end + n_delim + n_wait + n_exit; }

  S1K_HD int32_t kind_offset(int32_t kind) const {
    return kind == kInjectWait ? off_wait() : kind == kInjectDelimiter ? off_delim() : off_exit();
  }
  S1K_HD int32_t kind_length(int32_t kind) const {
    return kind == kInjectWait ? n_wait : kind == kInjectDelimiter ? n_delim : kind == kInjectExit ? n_exit : 0;
  }
  S1K_HD bool is_end(int64_t tok) const {
    for (int32_t i = 0; i < n_end; ++i)
      if (ids[off_end() + i] == tok) return true;
    return false;
  }
  S1K_HD bool is_eos(int64_t tok) const {
    for (int32_t i = 0; i < n_eos; ++i)
      if (ids[off_eos() + i] == tok) return true;
    return false;
  }
};

struct StepPlan {
  bool sample;     // the row samples from its logits this step
  bool suppress;   // ... with the end-of-thinking and EOS ids masked out
  bool may_end;    // a thinking row may end its thinking now
  int64_t token;   // the forced token when !sample
};

// Rules 0-2: done rows emit pad; the thinking cap starts the forced exit; a pending
// injection emits its next token. Otherwise the row samples (rule 3, finished by finish_step).
S1K_HD StepPlan plan_step(RowState& s, const RowBudget& b, const ForcingTable& f) {
  StepPlan p{false, false, false, f.pad_id};
  if (s.phase == kDone) {
    s.event = kEventPad;
    return p;
  }
  // A pending WAIT is never cut short (finish_step starts one only when it fits in the
  // budget, so a cut word such as "Wa" + exit never reaches the text); a pending DELIMITER
  // means the row already left thinking.
  if (s.phase == kThinking && s.thinking_tokens >= b.max_thinking_tokens && s.inject_kind == kInjectNone) {
    s.inject_kind = kInjectExit;
    s.inject_pos = 0;
    s.phase = kAnswer;
  }
  if (s.inject_kind != kInjectNone) {
    // A state written by hand (not by this machine) may hold a cursor past its sequence:
    // clamp the read to the table, as the torch reference does, rather than read past it.
    int32_t at = f.kind_offset(s.inject_kind) + s.inject_pos;
    const int32_t last = f.off_eos() + f.n_eos - 1;
    at = at < 0 ? 0 : (at > last ? last : at);
    p.token = f.ids[at];
    s.event = s.inject_kind == kInjectWait ? kEventWait : s.inject_kind == kInjectDelimiter ? kEventDelimiter : kEventExit;
    if (s.phase == kThinking) s.thinking_tokens += 1;  // only WAIT tokens are injected while thinking
    s.inject_pos += 1;
    if (s.inject_pos >= f.kind_length(s.inject_kind)) {
      s.inject_kind = kInjectNone;
      s.inject_pos = 0;
    }
    return p;
  }
  p.sample = true;
  if (s.phase == kThinking) {
    p.may_end = s.thinking_tokens >= b.min_thinking_tokens && (b.mode == kModeSuppress || s.waits_used >= b.num_waits);
    p.suppress = !p.may_end && b.mode == kModeSuppress;
  }
  return p;
}

// Rules 3-4 after sampling. `error` is 0 or the ErrorBits of a row whose logits could not be
// sampled. Returns the token to emit; *use_logprob says whether the sampled token's logprob
// belongs to it (false for pad and the WAIT replacement).
S1K_HD int64_t finish_step(RowState& s, const RowBudget& b, const ForcingTable& f, const StepPlan& p,
                           int64_t sampled, int32_t error, bool* use_logprob) {
  *use_logprob = false;
  if (error != 0) {
    s.error |= error;
    s.phase = kDone;
    s.event = kEventError;
    return f.pad_id;
  }
  s.event = kEventSampled;
  if (s.phase == kThinking) {
    const bool end = f.is_end(sampled);
    const bool eos = !end && f.is_eos(sampled);
    if ((end || eos) && !p.may_end) {  // too early: the wait sequence replaces the end ...
      if (static_cast<int64_t>(s.thinking_tokens) + f.n_wait > b.max_thinking_tokens) {
        // ... unless it does not fit in the budget: the row wanted to end and the budget
        // ends it within the wait's length anyway, so it takes the forced exit now
        s.phase = kAnswer;
        s.event = kEventExit;
        if (f.n_exit > 1) {
          s.inject_kind = kInjectExit;
          s.inject_pos = 1;
        }
        return f.ids[f.off_exit()];
      }
      s.waits_used += 1;
      s.thinking_tokens += 1;
      s.event = kEventWait;
      if (f.n_wait > 1) {
        s.inject_kind = kInjectWait;
        s.inject_pos = 1;
      }
      return f.ids[f.off_wait()];
    }
    *use_logprob = true;
    if (end) {
      s.phase = kAnswer;
      if (f.n_delim > 0) {
        s.inject_kind = kInjectDelimiter;
        s.inject_pos = 0;
      }
    } else if (eos) {
      s.phase = kDone;
    } else {
      s.thinking_tokens += 1;
    }
    return sampled;
  }
  // answer phase
  *use_logprob = true;
  s.answer_tokens += 1;
  if (f.is_eos(sampled) || s.answer_tokens >= b.max_answer_tokens) s.phase = kDone;
  return sampled;
}

}  // namespace s1k
