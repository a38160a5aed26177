// A host SIMT emulation: enough of CUDA's execution model to run a kernel's own source on a CPU.
//
// Every CUDA thread is a fiber (a small x86-64 stack switch, or glibc ucontext elsewhere). One
// cluster of CTAs runs at a time on the calling OS thread; clusters run one after another in a
// seeded random order. A fiber runs until it reaches a synchronisation point: __syncthreads,
// cluster.sync(), or a warp collective (__shfl*_sync, __ballot_sync, __any_sync,
// __match_any_sync, __reduce_add_sync, __syncwarp). There it blocks until every thread the
// point names has arrived, and the scheduler resumes a runnable fiber drawn at random (seeded):
// between two barriers the threads of every CTA of the cluster run in a random order, and the
// warps interleave at every collective. Odd schedule seeds skew the draw: the CTAs and warps get
// a random priority order (CTAs: anew after each cluster barrier; warps: after each barrier)
// and the highest runnable one runs, so one CTA runs ahead through all its __syncthreads up to
// the next cluster barrier while another has not resumed (uniform draws almost never do that).
// A kernel whose result depends on the order (a missing barrier, a read of shared memory that
// another thread writes in the same phase) gives other bits under other schedule seeds, or
// other results than its CPU twin; tests run several seeds.
//
// Reported as a launch failure with a message (simt::last_error_message):
//   - a deadlock (no runnable thread while some wait), which is also what warp collectives whose
//     lanes never meet (another collective, another mask) end in,
//   - a collective whose mask names an exited lane, or reads a source lane outside the mask,
//   - a barrier reached after a thread of the same CTA (or cluster) exited, or a thread exiting
//     while others wait at a barrier it belongs to,
//   - map_shared_rank of a pointer outside the cluster's shared memory, or into a CTA that
//     has exited (CUDA: undefined; the reason decode.cu ends with cl.sync()).
// Shared memory starts as seeded random bytes (CUDA does not initialise it) and is poisoned
// when its CTA exits.
//
// Not emulated: the memory model (every access is sequentially consistent here), timing,
// global-memory bounds, the hardware's real scheduling and fast-math intrinsics' exact bits
// (__expf is expf). See docs/testing.md.
#pragma once

#include <math.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

// ------------------------------------------------------------------ fibers
// A fiber switch saves the callee-saved registers and the stack pointer (x86-64 System V),
// about 100x cheaper than swapcontext, which also saves the signal mask with a system call.
// Other architectures use ucontext throughout.
#if defined(__x86_64__) && !defined(SIMT_USE_UCONTEXT)
#define SIMT_ASM_SWITCH 1
// simt_switch(save, next): stores the current stack pointer in *save, resumes the fiber whose
// stack pointer is `next`. Weak and hidden: the header may be included in several objects.
asm(R"(
    .text
    .weak simt_switch
    .hidden simt_switch
    .type simt_switch, @function
simt_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size simt_switch, .-simt_switch
)");
extern "C" void simt_switch(void** save, void* next);
#endif

namespace simt {

struct Context {
#if SIMT_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// Prepares ctx to run entry() (which never returns) on [stack, stack + bytes).
inline void make_context(Context& ctx, char* stack, size_t bytes, void (*entry)()) {
#if SIMT_ASM_SWITCH
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                              // entry's return address (never used)
  *--sp = reinterpret_cast<void*>(entry);       // simt_switch's ret goes here
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12-r15
  ctx.sp = sp;
#else
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack;
  ctx.uc.uc_stack.ss_size = bytes;
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
#endif
}

inline void switch_context(Context& save, Context& next) {
#if SIMT_ASM_SWITCH
  simt_switch(&save.sp, next.sp);
#else
  swapcontext(&save.uc, &next.uc);
#endif
}

struct uint3 {
  unsigned x, y, z;
};

constexpr int kWarpSize = 32;
constexpr size_t kSharedBytes = 228 * 1024;  // the most an sm_90 CTA can have
constexpr size_t kStackBytes = 256 * 1024;

// Knobs a test sets before a launch.
struct Config {
  uint64_t schedule_seed = 0;  // picks the interleaving
  unsigned force_cluster = 0;  // 0: the launch's own cluster size; else this one (see launch())
  int sm_count = 132;          // cudaDevAttrMultiProcessorCount
};
inline Config config;
inline std::string last_error_message;
inline unsigned last_cluster = 0;  // the cluster size the last launch ran with

enum class Wait : uint8_t { kRunning, kBlock, kCluster, kWarp, kDone };
enum class Op : uint8_t { kShfl, kShflUp, kShflXor, kBallot, kAny, kMatchAny, kReduceAdd, kSyncWarp };

inline const char* op_name(Op op) {
  static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_xor_sync", "__ballot_sync",
                                "__any_sync",  "__match_any_sync", "__reduce_add_sync", "__syncwarp"};
  return names[static_cast<int>(op)];
}

struct Thread {
  Context ctx;
  char* stack = nullptr;
  int cta = 0;  // rank in the cluster
  uint3 thread_idx{0, 0, 0}, block_idx{0, 0, 0};
  Wait wait = Wait::kDone;
  // the warp collective this thread waits in
  Op op = Op::kSyncWarp;
  unsigned mask = 0;
  uint64_t in = 0, out = 0;
  int arg = 0;
};

// The cluster being run. An emulation error switches back to the launcher, which abandons the fibers.
struct Cluster {
  unsigned C = 1, threads = 1;  // CTAs, threads per CTA
  uint3 grid{1, 1, 1}, block{1, 1, 1};
  std::vector<Thread> th;                    // C * threads, CTA-major
  std::vector<unsigned char*> smem;          // per CTA
  std::vector<unsigned> block_arrived, exited;  // per CTA
  unsigned cluster_arrived = 0, cluster_exited = 0, done = 0;
  // Runnable threads, one list per warp (group = cta * warps + warp), and the warps' priorities.
  std::vector<std::vector<int>> ready;
  std::vector<uint32_t> prio, cta_prio;
  size_t n_ready = 0;
  unsigned warps = 1;  // per CTA
  bool skew = false;   // pick by priority (a skewed schedule) rather than uniformly
  std::mt19937_64 rng;
  Context launcher;
  int cur = -1;
  const std::function<void()>* body = nullptr;
  bool failed = false;
};

inline Cluster* g_cluster = nullptr;
inline uint3 g_grid{1, 1, 1}, g_block{1, 1, 1};  // gridDim and blockDim of the running launch
inline size_t g_shared_used = 0;  // bytes of the arena reserved by S1K_SHARED declarations

inline Thread& cur_thread() { return g_cluster->th[g_cluster->cur]; }

[[noreturn]] inline void fail(const std::string& what);

// Priorities of a skewed schedule, which runs the first CTA's first warp while it can, then the
// next one: a new random order of the warps of a CTA after each of its __syncthreads, and of
// the CTAs (and all warps) only after a cluster barrier, so that one CTA gets through all its
// __syncthreads up to the next cluster barrier before another resumes.
inline void reprioritize_warps(unsigned cta) {
  Cluster& c = *g_cluster;
  std::vector<uint32_t> warps(c.warps);
  for (unsigned w = 0; w < c.warps; ++w) warps[w] = w;
  std::shuffle(warps.begin(), warps.end(), c.rng);
  for (unsigned w = 0; w < c.warps; ++w) c.prio[cta * c.warps + w] = c.cta_prio[cta] * c.warps + warps[w];
}

inline void reprioritize() {
  Cluster& c = *g_cluster;
  for (unsigned k = 0; k < c.C; ++k) c.cta_prio[k] = k;
  std::shuffle(c.cta_prio.begin(), c.cta_prio.end(), c.rng);
  for (unsigned k = 0; k < c.C; ++k) reprioritize_warps(k);
}

// Picks and removes a runnable thread: uniformly at random, or (skewed schedules) at random in
// the runnable warp of the highest priority.
inline int pick_ready() {
  Cluster& c = *g_cluster;
  size_t g = 0;
  if (c.skew) {
    uint32_t best = UINT32_MAX;
    for (size_t k = 0; k < c.ready.size(); ++k)
      if (!c.ready[k].empty() && c.prio[k] < best) best = c.prio[k], g = k;
  } else {
    size_t r = std::uniform_int_distribution<size_t>(0, c.n_ready - 1)(c.rng);
    while (r >= c.ready[g].size()) r -= c.ready[g++].size();
  }
  std::vector<int>& list = c.ready[g];
  const size_t k = std::uniform_int_distribution<size_t>(0, list.size() - 1)(c.rng);
  const int next = list[k];
  list[k] = list.back();
  list.pop_back();
  --c.n_ready;
  return next;
}

// Runs a runnable thread chosen by pick_ready(). The current thread must already be marked
// (runnable and in a ready list, or blocked, or done). Returns when it is resumed.
inline void schedule() {
  Cluster& c = *g_cluster;
  if (c.n_ready == 0) {
    if (c.done == c.th.size()) {  // the last thread exited: back to launch()
      switch_context(c.th[c.cur].ctx, c.launcher);
      std::abort();
    }
    std::string who;
    for (size_t i = 0; i < c.th.size() && who.size() < 300; ++i) {
      const Thread& t = c.th[i];
      if (t.wait == Wait::kDone) continue;
      who += " [cta " + std::to_string(t.cta) + " thread " + std::to_string(t.thread_idx.x) + ": " +
             (t.wait == Wait::kBlock ? "__syncthreads" : t.wait == Wait::kCluster ? "cluster.sync" : op_name(t.op)) +
             "]";
    }
    fail("deadlock: no thread can run; waiting:" + who);
  }
  const int next = pick_ready();
  const int me = c.cur;
  if (next == me) return;
  c.cur = next;
  switch_context(c.th[me].ctx, c.th[next].ctx);  // (an exited thread's context is never resumed)
}

[[noreturn]] inline void fail(const std::string& what) {
  Cluster& c = *g_cluster;
  if (last_error_message.empty()) last_error_message = what;
  c.failed = true;
  Context abandoned;
  switch_context(abandoned, c.launcher);
  std::abort();
}

inline void make_runnable(int i) {
  Cluster& c = *g_cluster;
  c.th[i].wait = Wait::kRunning;
  c.ready[static_cast<size_t>(i) / kWarpSize].push_back(i);  // CTAs are whole warps: i / 32 is the group
  ++c.n_ready;
}

// ------------------------------------------------------------------ barriers

inline void syncthreads() {
  Cluster& c = *g_cluster;
  Thread& t = cur_thread();
  if (c.exited[t.cta]) fail("__syncthreads reached after a thread of CTA " + std::to_string(t.cta) + " exited");
  t.wait = Wait::kBlock;
  if (++c.block_arrived[t.cta] == c.threads) {
    c.block_arrived[t.cta] = 0;
    for (unsigned i = 0; i < c.threads; ++i) make_runnable(static_cast<int>(t.cta * c.threads + i));
    reprioritize_warps(static_cast<unsigned>(t.cta));
  }
  schedule();
}

inline void cluster_sync() {
  Cluster& c = *g_cluster;
  Thread& t = cur_thread();
  if (c.cluster_exited) fail("cluster.sync() reached after a thread of the cluster exited");
  t.wait = Wait::kCluster;
  if (++c.cluster_arrived == c.C * c.threads) {
    c.cluster_arrived = 0;
    for (size_t i = 0; i < c.th.size(); ++i) make_runnable(static_cast<int>(i));
    reprioritize();
  }
  schedule();
}

// ------------------------------------------------------------------ warp collectives

// The current thread enters collective `op` over the lanes of `mask`; when the last of them
// arrives, every participant gets its result. Returns this thread's result.
inline uint64_t collective(Op op, unsigned mask, uint64_t in, int arg = 0) {
  Cluster& c = *g_cluster;
  Thread& t = cur_thread();
  const int lane = static_cast<int>(t.thread_idx.x) & (kWarpSize - 1);
  const int base = c.cur - lane;  // the warp's lane 0
  if (!((mask >> lane) & 1u)) fail(std::string(op_name(op)) + ": the calling lane is not in its mask");
  t.op = op;
  t.mask = mask;
  t.in = in;
  t.arg = arg;
  t.wait = Wait::kWarp;
  bool complete = true;
  for (int l = 0; l < kWarpSize; ++l) {
    if (!((mask >> l) & 1u)) continue;
    const Thread& o = c.th[base + l];
    if (o.wait == Wait::kDone) fail(std::string(op_name(op)) + ": mask names lane " + std::to_string(l) + ", which exited");
    // A lane still in another collective (or at a barrier) arrives later: independent thread
    // scheduling lets e.g. one group of __reduce_add_sync(peers) reach the next __syncwarp first.
    // Lanes that never meet leave every thread waiting: a deadlock, reported by schedule().
    if (o.wait != Wait::kWarp || o.op != op || o.mask != mask) complete = false;
  }
  if (complete) {
    auto src_in = [&](int l, int src) -> uint64_t {
      if (!((mask >> src) & 1u))
        fail(std::string(op_name(op)) + ": lane " + std::to_string(l) + " reads lane " + std::to_string(src) +
             ", which is not in the mask");
      return c.th[base + src].in;
    };
    uint64_t ballot = 0, sum = 0;
    for (int l = 0; l < kWarpSize; ++l) {
      if (!((mask >> l) & 1u)) continue;
      ballot |= static_cast<uint64_t>(c.th[base + l].in != 0) << l;
      sum += static_cast<uint32_t>(c.th[base + l].in);
    }
    for (int l = 0; l < kWarpSize; ++l) {
      if (!((mask >> l) & 1u)) continue;
      Thread& p = c.th[base + l];
      switch (op) {
        case Op::kShfl: p.out = src_in(l, p.arg & (kWarpSize - 1)); break;
        case Op::kShflUp: p.out = l - p.arg >= 0 ? src_in(l, l - p.arg) : p.in; break;
        case Op::kShflXor: p.out = src_in(l, (l ^ p.arg) & (kWarpSize - 1)); break;
        case Op::kBallot: p.out = ballot; break;
        case Op::kAny: p.out = ballot != 0; break;
        case Op::kMatchAny: {
          uint64_t m = 0;
          for (int k = 0; k < kWarpSize; ++k)
            if (((mask >> k) & 1u) && c.th[base + k].in == p.in) m |= 1ull << k;
          p.out = m;
          break;
        }
        case Op::kReduceAdd: p.out = static_cast<uint32_t>(sum); break;
        case Op::kSyncWarp: p.out = 0; break;
      }
      make_runnable(base + l);
    }
  }
  schedule();
  return t.out;
}

template <class T>
uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// ------------------------------------------------------------------ shared memory

inline size_t reserve_shared(size_t bytes, size_t align) {
  g_shared_used = (g_shared_used + align - 1) / align * align;
  const size_t off = g_shared_used;
  g_shared_used += bytes;
  if (g_shared_used > kSharedBytes) {
    std::fprintf(stderr, "simt: more than %zu bytes of __shared__ declared\n", kSharedBytes);
    std::abort();
  }
  return off;
}

// One slot per declaration site (Site is a lambda type unique to it), at the same offset in
// every CTA's arena.
template <class T, class Site>
T* shared_slot(Site) {
  static const size_t off = reserve_shared(sizeof(T), alignof(T));
  return reinterpret_cast<T*>(g_cluster->smem[cur_thread().cta] + off);
}

// The address of *p's counterpart in the shared memory of CTA `rank` of the cluster.
template <class T>
T* map_shared_rank(T* p, unsigned rank) {
  Cluster& c = *g_cluster;
  const unsigned char* b = reinterpret_cast<const unsigned char*>(p);
  for (unsigned k = 0; k < c.C; ++k) {
    if (b >= c.smem[k] && b < c.smem[k] + kSharedBytes) {
      if (rank >= c.C) fail("map_shared_rank: rank " + std::to_string(rank) + " of a cluster of " + std::to_string(c.C));
      if (c.exited[rank] == c.threads)
        fail("map_shared_rank: CTA " + std::to_string(rank) + " has exited; its shared memory is gone");
      return reinterpret_cast<T*>(c.smem[rank] + (b - c.smem[k]));
    }
  }
  fail("map_shared_rank: the pointer is not in the cluster's shared memory");
}

// ------------------------------------------------------------------ launch

inline void fiber_entry() {
  Cluster& c = *g_cluster;
  (*c.body)();
  Thread& t = cur_thread();
  t.wait = Wait::kDone;
  ++c.done;
  ++c.exited[t.cta];
  ++c.cluster_exited;
  if (c.block_arrived[t.cta]) fail("a thread of CTA " + std::to_string(t.cta) + " exited while others wait in __syncthreads");
  if (c.cluster_arrived) fail("a thread exited while others wait in cluster.sync()");
  if (c.exited[t.cta] == c.threads) {  // the CTA's shared memory is released: poison it
    std::memset(c.smem[t.cta], 0xA5, kSharedBytes);
  }
  schedule();
}

// Runs body() as every thread of a grid of `grid` CTAs of `block` threads, in clusters of
// `cluster` CTAs (grid.x a multiple of it; y = z = 1). With config.force_cluster set, the
// cluster size is replaced by it and grid.x scaled to keep the number of clusters: valid for
// kernels that, like decode.cu, derive their work split from cluster.num_blocks().
// Returns false (and sets last_error_message) on an emulation error.
inline bool launch(uint3 grid, uint3 block, unsigned cluster, const std::function<void()>& body) {
  last_error_message.clear();
  if (cluster == 0) cluster = 1;
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1 || grid.x % cluster != 0 || block.x % kWarpSize) {
    last_error_message = "simt: only 1-D grids of whole clusters and 1-D blocks of whole warps are emulated";
    return false;
  }
  if (config.force_cluster) {
    grid.x = grid.x / cluster * config.force_cluster;
    cluster = config.force_cluster;
  }
  last_cluster = cluster;
  g_grid = grid;
  g_block = block;
  const unsigned n_clusters = grid.x / cluster;
  std::mt19937_64 rng(config.schedule_seed * 0x9E3779B97F4A7C15ull + 1);
  std::vector<unsigned> order(n_clusters);
  for (unsigned i = 0; i < n_clusters; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);

  static std::vector<char*> stacks;  // reused across launches
  static std::vector<unsigned char*> arenas;
  const size_t n = static_cast<size_t>(cluster) * block.x;
  while (stacks.size() < n) stacks.push_back(static_cast<char*>(std::malloc(kStackBytes)));
  while (arenas.size() < cluster) arenas.push_back(static_cast<unsigned char*>(std::malloc(kSharedBytes)));

  for (unsigned ci : order) {
    Cluster c;
    c.C = cluster;
    c.threads = block.x;
    c.grid = grid;
    c.block = block;
    c.body = &body;
    c.rng.seed(rng());
    // odd schedule seeds skew: one CTA (and one warp) runs ahead of the others between barriers,
    // which exposes a CTA overwriting what another has yet to read; even seeds are uniform
    c.skew = config.schedule_seed & 1;
    c.warps = block.x / kWarpSize;
    c.ready.assign(n / kWarpSize, {});
    c.prio.assign(n / kWarpSize, 0);
    c.cta_prio.assign(cluster, 0);
    c.th.resize(n);
    c.block_arrived.assign(cluster, 0);
    c.exited.assign(cluster, 0);
    for (unsigned k = 0; k < cluster; ++k) {
      c.smem.push_back(arenas[k]);
      for (size_t i = 0; i < kSharedBytes; i += 8) {  // uninitialised shared memory: random bytes
        const uint64_t r = c.rng();
        std::memcpy(arenas[k] + i, &r, 8);
      }
    }
    for (size_t i = 0; i < n; ++i) {
      Thread& t = c.th[i];
      t.cta = static_cast<int>(i / block.x);
      t.thread_idx = uint3{static_cast<unsigned>(i % block.x), 0, 0};
      t.block_idx = uint3{ci * cluster + static_cast<unsigned>(t.cta), 0, 0};
      t.stack = stacks[i];
      make_context(t.ctx, t.stack, kStackBytes, fiber_entry);
    }
    Cluster* saved = g_cluster;
    g_cluster = &c;
    for (size_t i = 0; i < n; ++i) make_runnable(static_cast<int>(i));
    reprioritize();
    c.cur = pick_ready();  // the first thread is drawn as well
    switch_context(c.launcher, c.th[c.cur].ctx);
    g_cluster = saved;
    if (c.failed) return false;
  }
  return true;
}

}  // namespace simt
