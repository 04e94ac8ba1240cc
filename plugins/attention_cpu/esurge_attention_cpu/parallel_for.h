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

namespace esurge_cpu {

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

  // Runs body(i) for i in [0, n); items are claimed one at a time (they may differ in cost).
  // The caller takes part and returns once every item has finished; a worker that arrives
  // late finds its job's items all claimed and touches nothing else.
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
    auto job = std::make_shared<Job>();
    job->total = n;
    job->body = &body;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = job;
      generation_.fetch_add(1);
    }
    if (parked_.load() > 0) wake_.notify_all();
    job->Drain();
    while (job->finished.load(std::memory_order_acquire) < n) CpuRelax();
  }

 private:
  struct Job {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> finished{0};
    int64_t total = 0;
    const std::function<void(int64_t)>* body = nullptr;
    void Drain() {
      for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
        (*body)(i);
        finished.fetch_add(1, std::memory_order_release);
      }
    }
  };

  static void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  void Work() {
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
      if (job) job->Drain();
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

// Threads a ParallelFor runs on (the caller included).
inline int64_t PoolSize() { return Pool().size(); }

inline void ParallelFor(int64_t n, const std::function<void(int64_t)>& body) {
  Pool().ParallelFor(n, body);
}

}  // namespace esurge_cpu

#endif  // ESURGE_PARALLEL_FOR_H_
