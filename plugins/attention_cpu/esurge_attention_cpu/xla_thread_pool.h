// Runs the ParallelFor helpers of a kernel call on XLA's intra-op thread pool.
//
// XLA:CPU runs its own fused ops on that pool (two threads on a 2-core machine), and its
// threads keep polling for work for a while after each op. In a prefill step, where XLA's
// ops are large and parallel, the library's own worker then competed with them for the two
// cores. Measured on the 2-core Zen 4 kind (docs/PERFORMANCE.md step 30), a 2048-token
// prefill (16 prompts of 128 tokens) took 1407-1542 ms with every kernel call on the own
// workers and 1292-1320 ms with the calls' helpers handed to XLA's pool. In a decode step
// the opposite holds: hundreds of calls of tens of microseconds, for which XLA's pool wakes
// its threads too slowly (batch 1: 14.1-14.3 ms per step on XLA's pool, 12.0-12.5 ms on the
// library's spinning workers). So calls of steps of at least kXlaPoolMinTokens tokens use
// XLA's pool, smaller ones the library's workers.
//
// Usage, in an FFI handler bound with `.Ctx<ffi::ThreadPool>()`:
//   esurge_cpu::XlaThreadPoolScope scope(thread_pool, step_tokens);
// for the duration of the call. Without a usable pool (none given, or
// ESURGE_CPU_KERNEL_POOL=own) every call's ParallelFor uses the library's own workers.

#ifndef ESURGE_XLA_THREAD_POOL_H_
#define ESURGE_XLA_THREAD_POOL_H_

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <thread>
#include <utility>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace esurge_cpu {

// Whether kernel calls use XLA's pool ($ESURGE_CPU_KERNEL_POOL: "xla", the default, or "own").
inline bool UseXlaThreadPool() {
  static const bool use = [] {
    const char* env = std::getenv("ESURGE_CPU_KERNEL_POOL");
    return env == nullptr || std::strcmp(env, "own") != 0;
  }();
  return use;
}

// Calls of a step of at least this many (padded) tokens (a prefill bucket, or a decode batch of
// that many sequences) run their helpers on XLA's pool; smaller steps (decode) on the
// library's own spinning workers, which pick up the hundreds of short calls of a decode step
// sooner.
constexpr int64_t kXlaPoolMinTokens = 128;

// A step's token count as the leading dimension of a call's activations (0 for a scalar).
inline int64_t LeadingDimension(const xla::ffi::AnyBuffer& buffer) {
  const auto dims = buffer.dimensions();
  return dims.size() == 0 ? 0 : dims[0];
}

class XlaThreadPoolScope {
 public:
  // `step_tokens`: the (padded) token count of the step the call belongs to.
  XlaThreadPoolScope(xla::ffi::ThreadPool pool, int64_t step_tokens) : pool_(pool) {
    if (step_tokens < kXlaPoolMinTokens || !UseXlaThreadPool()) return;
    const int64_t threads = pool_.num_threads();
    if (threads <= 0) return;  // no pool: the library's own workers
    // The caller is one participant; never more participants than CPUs (or
    // $ESURGE_CPU_KERNEL_THREADS), read once per process.
    static const int64_t cpus = EnvInt("ESURGE_CPU_KERNEL_THREADS", 1,
                                       std::max(1u, std::thread::hardware_concurrency()));
    executor_.helpers = static_cast<int>(std::max<int64_t>(0, std::min(threads, cpus) - 1));
    executor_.schedule = [this](std::function<void()> task) { pool_.Schedule(std::move(task)); };
    scope_.emplace(&executor_);
  }

 private:
  xla::ffi::ThreadPool pool_;
  Executor executor_;
  std::optional<ScopedExecutor> scope_;
};

}  // namespace esurge_cpu

#endif  // ESURGE_XLA_THREAD_POOL_H_
