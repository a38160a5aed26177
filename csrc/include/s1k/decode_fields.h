// The decode step's per-row fields, one X-macro per group: X(name, element type).
// Written from s1kernels/ops/decode/fields.py (the one table) by setup.py; do not edit.
#pragma once

#define S1K_DECODE_STATE_FIELDS(X) \
  X(phase, int32_t)  /* THINKING / ANSWER / DONE */ \
  X(thinking_tokens, int32_t)  /* thinking tokens emitted so far */ \
  X(waits_used, int32_t)  /* wait sequences injected so far */ \
  X(inject_kind, int32_t)  /* the sequence being injected: NONE / WAIT / DELIMITER / EXIT */ \
  X(inject_pos, int32_t)  /* cursor into that sequence */ \
  X(answer_tokens, int32_t)  /* answer tokens sampled so far */ \
  X(error, int32_t)  /* bit 1: non-finite logits, bit 2: no allowed token */ \
  X(event, int32_t)  /* what the last step did: EVENT_* */ \
  X(step, int64_t)  /* the row's RNG counter, +1 per step */

#define S1K_DECODE_BUDGET_FIELDS(X) \
  X(min_thinking_tokens, int32_t)  /* thinking may not end before this many tokens */ \
  X(max_thinking_tokens, int32_t)  /* the forced exit comes at this many thinking tokens */ \
  X(num_waits, int32_t)  /* ends of thinking replaced by the wait sequence (s1's NUM_IGNORE) */ \
  X(max_answer_tokens, int32_t)  /* answer tokens before the row is cut */ \
  X(mode, int32_t)  /* before the minimum is met: 'wait' injects the wait sequence, 'suppress' forbids the end */

#define S1K_DECODE_SAMPLING_FIELDS(X) \
  X(temperature, float)  /* 0 = greedy */ \
  X(top_k, int32_t)  /* keep the k most likely tokens; 0 = off */ \
  X(top_p, float)  /* nucleus mass; 1 = off */ \
  X(min_p, float)  /* keep p >= min_p * p_max; 0 = off */ \
  X(seed, int64_t)  /* the row's RNG seed (any 64-bit integer; read as uint64) */
