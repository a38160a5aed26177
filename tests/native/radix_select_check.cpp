// Host harness for the decode kernel's radix select (csrc/decode.cu): the kernel's selection
// steps, run sequentially on a CPU with the same header functions (s1k/radix_select.h), must
// give exactly the thresholds that sorting gives under the same definitions (sampling.h), on
// rows with ties, -inf, repeated and out-of-range suppressed ids, for bf16/fp16/fp32 digits.
// Built and run by tests/test_decode_radix.py; prints "ok <cases>" or the first mismatch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "s1k/radix_select.h"
#include "s1k/sampling.h"

using namespace s1k;

namespace {

struct Hist {
  uint32_t cnt[kRadixBins];
  uint64_t mass[kRadixBins];
};

// The kernel's row_histogram + subtract_stop_ids: count every element, then take the
// suppressed ids back out.
template <class Sel>
Hist histogram(const std::vector<float>& x, const std::vector<int32_t>& stop, uint32_t prefix, uint32_t mask, int shift,
               Sel sel) {
  Hist h{};
  auto add = [&](float v, int sign) {
    const uint32_t key = float_key(v);
    uint64_t q = 0;
    if ((key & mask) != prefix || !sel(v, q)) return;
    const uint32_t b = (key >> shift) & 0xFFu;
    h.cnt[b] += sign;
    h.mass[b] += sign > 0 ? q : (0 - q);
  };
  for (float v : x) add(v, +1);
  for (int32_t id : stop) add(x[id], -1);
  return h;
}

// The kernel's warp-0 selection, lane by lane (lane L holds bins 255-8L .. 248-8L).
CountPick select_count(const Hist& h, int64_t remaining) {
  int64_t incl = 0;
  for (int lane = 0; lane < 32; ++lane) {
    const int hi = kRadixBins - 1 - 8 * lane;
    int64_t local = 0;
    for (int j = 0; j < 8; ++j) local += h.cnt[hi - j];
    incl += local;
    if (incl >= remaining || lane == 31) return pick_count_in_group(h.cnt, hi, incl - local, remaining);
  }
  return CountPick{0, 0};
}

MassPick select_mass(const Hist& h, uint64_t above, double* target, bool first_digit, float top_p) {
  uint64_t local[32], incl[32];
  uint32_t cnt[32];
  uint64_t run = 0;
  for (int lane = 0; lane < 32; ++lane) {
    const int hi = kRadixBins - 1 - 8 * lane;
    local[lane] = 0;
    cnt[lane] = 0;
    for (int j = 0; j < 8; ++j) {
      local[lane] += h.mass[hi - j];
      cnt[lane] += h.cnt[hi - j];
    }
    run += local[lane];
    incl[lane] = run;
  }
  if (first_digit) *target = static_cast<double>(top_p) * static_cast<double>(incl[31]);
  int chosen = -1, last_nonempty = -1;
  for (int lane = 0; lane < 32 && chosen < 0; ++lane) {
    if (cnt[lane] > 0 && static_cast<double>(above + incl[lane]) >= *target) chosen = lane;
    if (cnt[lane] > 0) last_nonempty = lane;
  }
  if (chosen < 0) chosen = last_nonempty >= 0 ? last_nonempty : 31;
  const int hi = kRadixBins - 1 - 8 * chosen;
  return pick_mass_in_group(h.cnt, h.mass, hi, above + (incl[chosen] - local[chosen]), *target);
}

float radix_topk(const std::vector<float>& x, const std::vector<int32_t>& stop, int digits, int64_t k) {
  uint32_t prefix = 0, mask = 0;
  int64_t remaining = k;
  for (int d = 0; d < digits; ++d) {
    const int shift = 24 - 8 * d;
    const Hist h = histogram(x, stop, prefix, mask, shift, [](float, uint64_t&) { return true; });
    const CountPick p = select_count(h, remaining);
    prefix |= static_cast<uint32_t>(p.bin) << shift;
    mask |= 0xFFu << shift;
    remaining = p.remaining;
  }
  return key_to_float(complete_key(prefix, mask));
}

float radix_topp(const std::vector<float>& x, const std::vector<int32_t>& stop, int digits, float t_k, float m,
                 float inv_t, float top_p) {
  uint32_t prefix = 0, mask = 0;
  uint64_t above = 0;
  double target = 0.0;
  auto kept = [&](float v, uint64_t& q) {
    if (!(v >= t_k)) return false;
    q = mass_fixed(std::exp((v - m) * inv_t));
    return true;
  };
  for (int d = 0; d < digits; ++d) {
    const int shift = 24 - 8 * d;
    const Hist h = histogram(x, stop, prefix, mask, shift, kept);
    const MassPick p = select_mass(h, above, &target, d == 0, top_p);
    prefix |= static_cast<uint32_t>(p.bin) << shift;
    mask |= 0xFFu << shift;
    above = p.above;
  }
  return key_to_float(complete_key(prefix, mask));
}

// A value exactly representable in the storage type: 8 (bf16) or 11 (fp16) significant bits.
float round_to(float v, int dtype) {
  if (dtype == kFloat32 || !std::isfinite(v) || v == 0.f) return v;
  const float bits = dtype == kBFloat16 ? 256.f : 2048.f;
  if (dtype == kFloat16) v = std::max(-65504.f, std::min(65504.f, v));
  int e = 0;
  const float mantissa = std::frexp(v, &e);  // in [0.5, 1)
  return std::ldexp(std::trunc(mantissa * bits) / bits, e);
}

}  // namespace

int main() {
  std::mt19937_64 rng(1234);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unif(0.f, 1.f);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int cases = 0;
  for (int dtype : {kFloat32, kFloat16, kBFloat16}) {
    for (int trial = 0; trial < 300; ++trial) {
      const int64_t n = 1 + static_cast<int64_t>(rng() % (trial % 3 == 0 ? 40 : 3000));
      const float scale = 0.01f + 8.f * unif(rng);
      const int flavor = trial % 4;  // 0 plain, 1 coarse grid (ties), 2 with -inf, 3 all equal
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) {
        float v = normal(rng) * scale;
        if (flavor == 1) v = std::round(v * 2.f) / 2.f;
        if (flavor == 2 && unif(rng) < 0.2f) v = neg_inf;
        if (flavor == 3) v = 1.5f;
        x[i] = round_to(v, dtype);
      }
      // Suppressed ids: repeats and ids past n included, as a forcing table may have them.
      std::vector<int32_t> ids;
      const int n_ids = static_cast<int>(rng() % 6);
      for (int j = 0; j < n_ids; ++j) ids.push_back(static_cast<int32_t>(rng() % (n + 3)));
      if (n_ids > 1) ids.push_back(ids[0]);
      const int32_t n_end = static_cast<int32_t>(ids.size() / 2);
      ForcingTable f{ids.data(), n_end, 0, 0, 0, static_cast<int32_t>(ids.size()) - n_end, 0};
      int32_t stop_buf[kMaxStopIds];
      const int n_stop = distinct_stop_ids(f, n, stop_buf);
      std::vector<int32_t> stop(stop_buf, stop_buf + n_stop);
      std::vector<bool> allowed(n, true);
      for (int32_t id : ids)
        if (id >= 0 && id < n) allowed[id] = false;
      int check = 0;
      for (int64_t i = 0; i < n; ++i) check += allowed[i] ? 0 : 1;
      if (check != n_stop) {
        std::printf("distinct_stop_ids: %d ids, expected %d\n", n_stop, check);
        return 1;
      }
      std::vector<float> xs;
      for (int64_t i = 0; i < n; ++i)
        if (allowed[i]) xs.push_back(x[i]);
      if (xs.empty() || xs.size() < 2) continue;
      std::sort(xs.begin(), xs.end(), std::greater<float>());
      const float m = xs[0];
      if (m == neg_inf) continue;
      const int digits = radix_digits(dtype);
      // top-k at every rank boundary of interest
      for (int64_t k : {int64_t{1}, int64_t{2}, static_cast<int64_t>(xs.size() / 2), static_cast<int64_t>(xs.size()) - 1}) {
        if (k < 1 || k >= static_cast<int64_t>(xs.size())) continue;
        const float got = radix_topk(x, stop, digits, k), want = xs[k - 1];
        ++cases;
        if (float_to_bits(got) != float_to_bits(want) && !(got == 0.f && want == 0.f)) {
          std::printf("top-k dtype %d n %lld k %lld: radix %.9g sort %.9g\n", dtype, static_cast<long long>(n),
                      static_cast<long long>(k), got, want);
          return 1;
        }
      }
      // top-p after an optional top-k, on the same integer masses
      for (float top_p : {1e-6f, 0.3f, 0.9f, 0.999999f}) {
        const float inv_t = 1.f / (0.3f + 1.5f * unif(rng));
        const int64_t k = (trial & 1) ? 1 + static_cast<int64_t>(rng() % xs.size()) : 0;
        const float t_k = (k > 0 && k < static_cast<int64_t>(xs.size())) ? xs[k - 1] : neg_inf;
        std::vector<uint64_t> cum;
        uint64_t acc = 0;
        for (float v : xs) {
          if (v >= t_k) acc += mass_fixed(std::exp((v - m) * inv_t));
          cum.push_back(acc);
        }
        const double target = static_cast<double>(top_p) * static_cast<double>(acc);
        size_t j = 0;
        while (j + 1 < cum.size() && static_cast<double>(cum[j]) < target) ++j;
        const float want = xs[j];
        const float got = radix_topp(x, stop, digits, t_k, m, inv_t, top_p);
        ++cases;
        if (float_to_bits(got) != float_to_bits(want) && !(got == 0.f && want == 0.f)) {
          std::printf("top-p dtype %d n %lld p %g t_k %g: radix %.9g sort %.9g\n", dtype, static_cast<long long>(n),
                      top_p, t_k, got, want);
          return 1;
        }
      }
    }
  }
  // mass_fixed: exact 32.32 rounding and clamping
  if (mass_fixed(1.f) != (uint64_t{1} << 32) || mass_fixed(0.5f) != (uint64_t{1} << 31) || mass_fixed(0.f) != 0 ||
      mass_fixed(7.f) != (uint64_t{1} << 32) || mass_fixed(std::ldexp(1.f, -33)) != 0 ||
      mass_fixed(std::ldexp(3.f, -34)) != 1 || mass_fixed(std::ldexp(1.f, -30)) != 4) {
    std::printf("mass_fixed rounding\n");
    return 1;
  }
  std::printf("ok %d\n", cases);
  return 0;
}
