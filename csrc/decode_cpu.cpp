// CPU twin of the fused decode step (csrc/decode.cu): the same budget-forcing logic
// (s1k/budget_forcing.h) and the same sampling definitions (s1k/sampling.h), computed in
// fp64 with a sort where the GPU uses a radix select. It agrees exactly with the torch
// reference in s1kernels/ops/decode/reference.py and is the oracle for the CUDA kernel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "s1k/decode.h"

namespace {

using s1k::DecodeArgs;

float load_logit(const void* row, int32_t dtype, int64_t i) {
  switch (dtype) {
    case s1k::kFloat32:
      return static_cast<const float*>(row)[i];
    case s1k::kFloat16:
      return s1k::fp16_bits_to_float(static_cast<const uint16_t*>(row)[i]);
    default:
      return s1k::bf16_bits_to_float(static_cast<const uint16_t*>(row)[i]);
  }
}

// Sorts finite floats in descending order: an LSD radix sort on order-preserving uint32 keys,
// three passes of 11 bits. The same multiset of values comes out in the same order as
// std::sort(greater) would give it (equal values are interchangeable), several times faster
// over a vocabulary-sized row (std::sort was most of a top-p step).
void sort_descending(std::vector<float>& xs, std::vector<uint32_t>& keys, std::vector<uint32_t>& tmp) {
  const size_t n = xs.size();
  keys.resize(n);
  tmp.resize(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, &xs[i], 4);
    const uint32_t up = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // ascending in the float
    keys[i] = ~up;                                                     // ascending key = descending float
  }
  uint32_t* src = keys.data();
  uint32_t* dst = tmp.data();
  for (int shift = 0; shift < 33; shift += 11) {
    size_t count[2049] = {0};
    for (size_t i = 0; i < n; ++i) ++count[((src[i] >> shift) & 2047u) + 1];
    for (int d = 0; d < 2048; ++d) count[d + 1] += count[d];
    for (size_t i = 0; i < n; ++i) dst[count[(src[i] >> shift) & 2047u]++] = src[i];
    std::swap(src, dst);
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t up = ~src[i];
    const uint32_t b = (up & 0x80000000u) ? (up & 0x7FFFFFFFu) : ~up;
    std::memcpy(&xs[i], &b, 4);
  }
}

struct SampleResult {
  int64_t token;
  int32_t error;
  double logprob;
};

// Samples one row: x = the row's logits [0, vocab_size) as float.
SampleResult sample_row(const std::vector<float>& x, const std::vector<bool>& allowed, float temperature,
                        int32_t top_k, float top_p, float min_p, uint64_t seed, uint64_t step) {
  const int64_t n = static_cast<int64_t>(x.size());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  bool bad = false;
  float m = neg_inf, m_raw = neg_inf;
  int64_t argmax = 0, n_allowed = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity()) bad = true;
    if (v > m_raw) m_raw = v;
    if (allowed[i]) {
      ++n_allowed;
      if (v > m) {
        m = v;
        argmax = i;
      }
    }
  }
  if (bad) return {0, s1k::kErrorNonFinite, 0.0};
  if (m == neg_inf) return {0, s1k::kErrorNoToken, 0.0};

  int64_t token = argmax;
  if (temperature > 0.f) {
    const double t = temperature, md = m;
    std::vector<float> xs;
    xs.reserve(n_allowed);
    for (int64_t i = 0; i < n; ++i)
      if (allowed[i]) xs.push_back(x[i]);
    thread_local std::vector<uint32_t> keys, tmp;
    sort_descending(xs, keys, tmp);
    float t_k = neg_inf;
    if (top_k > 0 && top_k < n_allowed) t_k = xs[top_k - 1];
    float t_p = neg_inf;
    if (top_p < 1.f) {
      // sequential cumulative mass in descending order, the same order as the reference's cumsum
      std::vector<double> cum(xs.size());
      double acc = 0.0;
      for (size_t i = 0; i < xs.size(); ++i) {
        acc += std::exp((static_cast<double>(xs[i]) - md) / t) * (xs[i] >= t_k ? 1.0 : 0.0);
        cum[i] = acc;
      }
      const double target = static_cast<double>(top_p) * acc;
      size_t j = 0;
      while (j < cum.size() && cum[j] < target) ++j;
      if (j >= cum.size()) j = cum.size() - 1;
      t_p = xs[j];
    }
    const float thr = std::max(t_k, t_p);
    const double log_min_p = std::log(static_cast<double>(min_p));
    // Start from the maximum's score (always kept, z = 0) and skip ids whose z trails the best
    // score by more than the largest Gumbel noise (16.64): they cannot win, as on the GPU.
    s1k::Philox4 words = s1k::decode_philox_group(seed, step, static_cast<uint32_t>(argmax >> 2));
    double best = s1k::gumbel_from_word<double>(words.w[argmax & 3]);
    token = argmax;
    int64_t group = argmax >> 2;
    for (int64_t i = 0; i < n; ++i) {
      if (!allowed[i] || !(x[i] >= thr)) continue;
      const double z = (static_cast<double>(x[i]) - md) / t;
      if (z < best - 17.0) continue;
      if (min_p > 0.f && !(z >= log_min_p)) continue;
      if ((i >> 2) != group) {
        group = i >> 2;
        words = s1k::decode_philox_group(seed, step, static_cast<uint32_t>(group));
      }
      const double score = z + s1k::gumbel_from_word<double>(words.w[i & 3]);
      if (score > best || (score == best && i < token)) {
        best = score;
        token = i;
      }
    }
  }
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m_raw);
  const double logprob = static_cast<double>(x[token]) - (static_cast<double>(m_raw) + std::log(s));
  return {token, 0, logprob};
}

}  // namespace

extern "C" int s1k_decode_step_cpu(const DecodeArgs* args) {
  if (args == nullptr) return s1k::kInvalidArgument;
  const DecodeArgs& a = *args;
  if (int code = s1k::validate_decode_args(a)) return code;
  const s1k::ForcingTable f = s1k::forcing_table(a, a.table);
  const int64_t n = a.vocab_size;
  const int64_t elem = a.dtype == s1k::kFloat32 ? 4 : 2;
  std::vector<float> x(n);
  std::vector<bool> allowed(n);
  for (int64_t r = 0; r < a.batch; ++r) {
    s1k::RowState s = s1k::load_row_state(a, r);
    const s1k::RowBudget b = s1k::load_row_budget(a, r);
    const s1k::StepPlan plan = s1k::plan_step(s, b, f);
    int64_t token = plan.token;
    float logprob = 0.f;
    if (plan.sample) {
      const void* row = static_cast<const char*>(a.logits) + r * a.row_stride * elem;
      for (int64_t i = 0; i < n; ++i) {
        x[i] = load_logit(row, a.dtype, i);
        allowed[i] = !(plan.suppress && (f.is_end(i) || f.is_eos(i)));
      }
      const SampleResult res = sample_row(x, allowed, a.temperature[r], a.top_k[r], a.top_p[r], a.min_p[r],
                                          static_cast<uint64_t>(a.seed[r]), static_cast<uint64_t>(a.step[r]));
      bool use_logprob = false;
      token = s1k::finish_step(s, b, f, plan, res.token, res.error, &use_logprob);
      if (use_logprob) logprob = static_cast<float>(res.logprob);
    }
    a.tokens[r] = token;
    a.logprobs[r] = logprob;
    s1k::store_row_state(a, r, s);
  }
  return s1k::kOk;
}
