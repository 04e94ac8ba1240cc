// The worker pool the CPU kernels of this library share, and its ParallelFor.
//
// A decode step calls the kernels a few hundred times, tens of microseconds each, with XLA's
// small fused ops in between, all on the thread that runs the step. A worker that sleeps
// between calls wakes too late to help (waking takes about as long as a call), and XLA's own
// intra-op pool showed the same latency (docs/PERFORMANCE.md). So the workers here spin for a
// short while after each call before they park, and a call hands work to them through an
// atomic generation counter, with no system call while they are spinning.
//
// Size: $ESURGE_CPU_KERNEL_THREADS, else every CPU (the caller is one of them). Spin time:
// $ESURGE_CPU_KERNEL_SPIN_US microseconds, default kDefaultSpinMicros (0: park at once).
//
// A kernel call may instead hand its helpers to another executor for its duration
// (ScopedExecutor): xla_thread_pool.h does so with XLA's intra-op pool for prefill steps.
// Either way a ParallelFor splits its items into one contiguous share per participant, each
// runs its own share in order and then takes what is left of the others' from their ends.

#ifndef ESURGE_PARALLEL_FOR_H_
#define ESURGE_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace esurge_cpu {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// The items [0, n) of one ParallelFor, in one contiguous share per participant. A thread's
// consecutive items are neighbours, which for the weight products means the same block of
// weights: measured on the 2-core Zen 4 kind (docs/PERFORMANCE.md step 29), 30 packed
// products of 576 x 1536 at 128-2048 rows ran at 362-381 GFLOP/s with shares against 313-327
// with items dealt out one at a time in order.
class Job {
 public:
  Job(int64_t n, int shares, const std::function<void(int64_t)>* body)
      : num_shares_(shares), shares_(new std::atomic<uint64_t>[shares]), body_(body) {
    for (int s = 0; s < shares; ++s) {
      shares_[s].store(Pack(n * s / shares, n * (s + 1) / shares), std::memory_order_relaxed);
    }
  }
  // Runs items until none is left unclaimed: participant `self`'s share from its front,
  // then the others' from their backs.
  void Drain(int self) {
    for (int64_t i; Take(self, /*front=*/true, &i);) Run(i);
    for (int k = 1; k < num_shares_; ++k) {
      for (int64_t i; Take((self + k) % num_shares_, /*front=*/false, &i);) Run(i);
    }
  }
  // A participant number for a worker joining this job (the caller is 0).
  int Join() { return std::min(joined_.fetch_add(1) + 1, num_shares_ - 1); }

  std::atomic<int64_t> finished{0};

 private:
  // A share's unclaimed items [begin, end) as one word (at most kMaxItems items).
  static uint64_t Pack(int64_t begin, int64_t end) {
    return (static_cast<uint64_t>(begin) << 32) | static_cast<uint64_t>(end);
  }
  bool Take(int share, bool front, int64_t* item) {
    uint64_t word = shares_[share].load(std::memory_order_relaxed);
    for (;;) {
      const int64_t begin = static_cast<int64_t>(word >> 32);
      const int64_t end = static_cast<int64_t>(word & 0xFFFFFFFFu);
      if (begin >= end) return false;
      const uint64_t rest = front ? Pack(begin + 1, end) : Pack(begin, end - 1);
      if (shares_[share].compare_exchange_weak(word, rest, std::memory_order_relaxed)) {
        *item = front ? begin : end - 1;
        return true;
      }
    }
  }
  void Run(int64_t item) {
    (*body_)(item);
    finished.fetch_add(1, std::memory_order_release);
  }

  const int num_shares_;
  std::unique_ptr<std::atomic<uint64_t>[]> shares_;
  const std::function<void(int64_t)>* body_;
  std::atomic<int> joined_{0};
};

// At most this many items per Job (a share is kept as two 32-bit halves of one word).
constexpr int64_t kMaxItems = int64_t{1} << 31;

// Threads that are not the pool's own: XLA's intra-op thread pool as the FFI hands it to a
// kernel call (xla_thread_pool.h). `schedule` runs a task on one of its threads; a
// ParallelFor hands it `helpers` tasks and runs a share itself.
struct Executor {
  int helpers = 0;
  std::function<void(std::function<void()>)> schedule;
};

// The executor of the kernel call running on this thread, if any (set by ScopedExecutor).
inline thread_local const Executor* t_executor = nullptr;

class ScopedExecutor {
 public:
  explicit ScopedExecutor(const Executor* executor) : saved_(t_executor) {
    t_executor = executor;
  }
  ~ScopedExecutor() { t_executor = saved_; }
  ScopedExecutor(const ScopedExecutor&) = delete;
  ScopedExecutor& operator=(const ScopedExecutor&) = delete;

 private:
  const Executor* saved_;
};

// How long an idle worker keeps polling for the next call before it parks.
constexpr int64_t kDefaultSpinMicros = 300;

class WorkerPool {
 public:
  WorkerPool(int num_threads, int64_t spin_micros) : spin_micros_(spin_micros) {
    for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs body(i) for i in [0, n) as one Job over the pool's threads, the caller's share
  // first. The caller returns once every item has finished; a worker that arrives late finds
  // its job's items all claimed (its own share taken from the end by the others) and touches
  // nothing else.
  // At most kMaxItems items (the free ParallelFor splits larger counts).
  void ParallelFor(int64_t n, const std::function<void(int64_t)>& body) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
      for (int64_t i = 0; i < n; ++i) body(i);
      return;
    }
    // One parallel-for at a time; a call that finds the pool busy (XLA running two kernels
    // at once on its own threads) runs on its caller alone rather than wait.
    std::unique_lock<std::mutex> call(call_mu_, std::try_to_lock);
    if (!call.owns_lock()) {
      for (int64_t i = 0; i < n; ++i) body(i);
      return;
    }
    auto job = std::make_shared<Job>(n, size(), &body);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = job;
      generation_.fetch_add(1);
    }
    if (parked_.load() > 0) wake_.notify_all();
    job->Drain(0);
    while (job->finished.load(std::memory_order_acquire) < n) CpuRelax();
  }

 private:
  void Work() {
#if defined(__linux__)
    // A new thread inherits its creator's name: the pool is made by the first kernel call,
    // on one of XLA's threads, so its workers would show as XLA's in profiles and /proc.
    pthread_setname_np(pthread_self(), "esurge-kernel");
#endif
    uint64_t seen = generation_.load();
    for (;;) {
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::microseconds(spin_micros_);
      for (int spins = 0; generation_.load() == seen; ++spins) {
        CpuRelax();
        if ((spins & 255) == 255 && std::chrono::steady_clock::now() > deadline) {
          std::unique_lock<std::mutex> lock(mu_);
          parked_.fetch_add(1);
          wake_.wait(lock, [&] { return generation_.load() != seen; });
          parked_.fetch_sub(1);
          break;
        }
      }
      std::shared_ptr<Job> job;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
        seen = generation_.load();
        job = job_;
      }
      if (job) job->Drain(job->Join());
    }
  }

  const int64_t spin_micros_;
  std::vector<std::thread> workers_;
  std::mutex mu_, call_mu_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> parked_{0};
  std::shared_ptr<Job> job_;
  bool stop_ = false;
};

// The value of environment variable `name` if it is an integer >= minimum, else `fallback`.
inline int64_t EnvInt(const char* name, int64_t minimum, int64_t fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr) return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(env, &end, 10);
  return (end != env && *end == '\0' && value >= minimum) ? value : fallback;
}

// One pool per process, shared by every kernel of the library.
inline WorkerPool& Pool() {
  static WorkerPool pool(
      static_cast<int>(EnvInt("ESURGE_CPU_KERNEL_THREADS", 1,
                              std::max(1u, std::thread::hardware_concurrency()))),
      EnvInt("ESURGE_CPU_KERNEL_SPIN_US", 0, kDefaultSpinMicros));
  return pool;
}

// ParallelFor on an executor: the caller and `helpers` tasks drain one Job. A task that
// starts after every item was claimed finds nothing to do (the Job outlives the call).
// At most kMaxItems items (the free ParallelFor splits larger counts).
inline void ParallelForOn(const Executor& executor, int64_t n,
                          const std::function<void(int64_t)>& body) {
  const int helpers = static_cast<int>(std::min<int64_t>(executor.helpers, n - 1));
  if (helpers <= 0) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  auto job = std::make_shared<Job>(n, helpers + 1, &body);
  for (int h = 0; h < helpers; ++h) executor.schedule([job] { job->Drain(job->Join()); });
  job->Drain(0);
  while (job->finished.load(std::memory_order_acquire) < n) CpuRelax();
}

// Threads a ParallelFor on this thread runs on (the caller included).
inline int64_t PoolSize() {
  return t_executor != nullptr ? t_executor->helpers + 1 : Pool().size();
}

inline void ParallelFor(int64_t n, const std::function<void(int64_t)>& body) {
  if (n > kMaxItems) {  // a share is kept as two 32-bit halves of one word
    for (int64_t start = 0; start < n; start += kMaxItems) {
      ParallelFor(std::min(kMaxItems, n - start), [&](int64_t i) { body(start + i); });
    }
    return;
  }
  if (t_executor != nullptr) return ParallelForOn(*t_executor, n, body);
  Pool().ParallelFor(n, body);
}

}  // namespace esurge_cpu

#endif  // ESURGE_PARALLEL_FOR_H_
