// Ragged paged attention for CPUs, called from JAX through the XLA FFI.
//
// Contract A of docs/attention.md, the same semantics as the XLA kernel
// (esurge_attention_xla.kernel.ragged_paged_attention): packed ragged queries attend causally
// to a paged KV cache whose pages interleave K and V per kv head
// ([num_pages, page_size, 2 * num_kv_heads, head_dim]).
//
// Why a native kernel: XLA has no way to read pages in place, so the jax.numpy kernel first
// gathers every visible page into a temporary and then runs many tiny batched matrix products;
// on CPU that costs several times the memory floor. Here each work item (one sequence, one kv
// head, a block of up to kQueryBlock query tokens) walks its visible keys directly in the
// pages, a tile at a time, with an online softmax in fp32, so K/V are read once per item.
// Items are spread over a small persistent thread pool.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kKeyTile = 32;
constexpr int kMaxRowsPerItem = 32;
constexpr float kMasked = -1e30f;

inline float Bf16ToF32(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t F32ToBf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// A fixed pool of workers that run one parallel-for at a time; the caller takes part.
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads) {
    for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs body(i) for i in [0, n); items are claimed one at a time (they differ in cost).
  void ParallelFor(int64_t n, const std::function<void(int64_t)>& body) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
      for (int64_t i = 0; i < n; ++i) body(i);
      return;
    }
    std::unique_lock<std::mutex> call(call_mu_);  // one parallel-for at a time
    {
      std::lock_guard<std::mutex> lock(mu_);
      body_ = &body;
      total_ = n;
      next_.store(0);
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    Drain();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return active_ == 0; });
    body_ = nullptr;
  }

 private:
  void Drain() {
    for (int64_t i = next_.fetch_add(1); i < total_; i = next_.fetch_add(1)) (*body_)(i);
  }
  void Work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      Drain();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--active_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, call_mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  std::atomic<int64_t> next_{0};
  int64_t total_ = 0;
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

int DefaultThreads() {
  if (const char* env = std::getenv("ESURGE_CPU_ATTENTION_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool& Pool() {
  static ThreadPool pool(DefaultThreads());
  return pool;
}

struct Layout {
  int64_t num_tokens, num_q_heads, head_dim;
  int64_t page_size, num_kv_heads, group;
  int64_t pages_per_seq;
  float sm_scale, soft_cap;
  int64_t sliding_window, chunk_size;  // 0: none
};

// One work item: query tokens [q_begin, q_begin + nq) of sequence `seq` (indices into the
// packed batch), all query heads of kv head `h`.
struct Item {
  int32_t seq, h, q_begin, nq;
  int32_t kv_len, q_len, q0;  // q0: index of the block's first token within the sequence
};

template <typename T>
inline float Load(const T* p, int64_t i);
template <>
inline float Load<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
inline float Load<uint16_t>(const uint16_t* p, int64_t i) {
  return Bf16ToF32(p[i]);
}

template <typename T>
void AttendItem(const Layout& L, const Item& it, const T* queries, const T* kv,
                const int32_t* page_table, T* out) {
  const int64_t D = L.head_dim, g = L.group, ps = L.page_size;
  const int64_t rows = it.nq * g;
  const int64_t kv_stride_token = 2 * L.num_kv_heads * D;
  const int64_t first_pos = it.kv_len - it.q_len + it.q0;  // position of the first row
  const int64_t last_pos = first_pos + it.nq - 1;

  // Row r = token j (r / g), head member gi (r % g); query head = h * g + gi.
  alignas(64) float q[kMaxRowsPerItem * 256];
  alignas(64) float acc[kMaxRowsPerItem * 256];
  float row_max[kMaxRowsPerItem], denom[kMaxRowsPerItem];
  int64_t row_pos[kMaxRowsPerItem], row_lo[kMaxRowsPerItem];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = it.q_begin + r / g;
    const int64_t head = it.h * g + r % g;
    const T* src = queries + (token * L.num_q_heads + head) * D;
    for (int64_t d = 0; d < D; ++d) q[r * D + d] = Load(src, d) * L.sm_scale;
    std::fill(acc + r * D, acc + (r + 1) * D, 0.0f);
    row_max[r] = kMasked;
    denom[r] = 0.0f;
    const int64_t p = first_pos + r / g;
    row_pos[r] = p;
    int64_t lo = 0;
    if (L.sliding_window > 0) lo = std::max<int64_t>(lo, p - L.sliding_window + 1);
    if (L.chunk_size > 0) lo = std::max<int64_t>(lo, (p / L.chunk_size) * L.chunk_size);
    row_lo[r] = lo;
  }
  const int64_t key_begin = row_lo[0];
  const int64_t key_end = std::min<int64_t>(last_pos, it.kv_len - 1) + 1;  // exclusive

  alignas(64) float k_tile[kKeyTile * 256];
  alignas(64) float v_tile[kKeyTile * 256];
  alignas(64) float scores[kKeyTile];
  const float cap = L.soft_cap;
  for (int64_t k0 = key_begin; k0 < key_end; k0 += kKeyTile) {
    const int64_t nt = std::min<int64_t>(kKeyTile, key_end - k0);
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t pos = k0 + t;
      const int64_t slot = std::min<int64_t>(pos / ps, L.pages_per_seq - 1);
      const int64_t page = page_table[slot];
      const T* kp = kv + (page * ps + pos % ps) * kv_stride_token + 2 * it.h * D;
      for (int64_t d = 0; d < D; ++d) k_tile[t * D + d] = Load(kp, d);
      for (int64_t d = 0; d < D; ++d) v_tile[t * D + d] = Load(kp + D, d);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t hi = std::min<int64_t>(row_pos[r], it.kv_len - 1);  // inclusive
      const int64_t t_lo = std::max<int64_t>(row_lo[r] - k0, 0);
      const int64_t t_hi = std::min<int64_t>(hi - k0 + 1, nt);  // exclusive
      if (t_lo >= t_hi) continue;
      const float* qr = q + r * D;
      float tile_max = kMasked;
      for (int64_t t = t_lo; t < t_hi; ++t) {
        const float* kt = k_tile + t * D;
        float s = 0.0f;
        for (int64_t d = 0; d < D; ++d) s += qr[d] * kt[d];
        if (cap > 0.0f) s = cap * std::tanh(s / cap);
        scores[t] = s;
        tile_max = std::max(tile_max, s);
      }
      const float new_max = std::max(row_max[r], tile_max);
      const float rescale = std::exp(row_max[r] - new_max);
      float* ar = acc + r * D;
      if (rescale != 1.0f) {
        for (int64_t d = 0; d < D; ++d) ar[d] *= rescale;
      }
      float sum = 0.0f;
      for (int64_t t = t_lo; t < t_hi; ++t) {
        const float p = std::exp(scores[t] - new_max);
        scores[t] = p;
        sum += p;
      }
      denom[r] = denom[r] * rescale + sum;
      row_max[r] = new_max;
      for (int64_t t = t_lo; t < t_hi; ++t) {
        const float p = scores[t];
        const float* vt = v_tile + t * D;
        for (int64_t d = 0; d < D; ++d) ar[d] += p * vt[d];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = it.q_begin + r / g;
    const int64_t head = it.h * g + r % g;
    T* dst = out + (token * L.num_q_heads + head) * D;
    const float inv = denom[r] > 0.0f ? 1.0f / denom[r] : 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      const float value = acc[r * D + d] * inv;
      if constexpr (sizeof(T) == 2) {
        dst[d] = F32ToBf16(value);
      } else {
        dst[d] = value;
      }
    }
  }
}

template <typename T>
ffi::Error Run(const Layout& L, const T* queries, const T* kv, const int32_t* kv_lens,
               const int32_t* page_indices, const int32_t* cu_q_lens, int64_t num_seqs,
               T* out) {
  std::memset(out, 0, sizeof(T) * L.num_tokens * L.num_q_heads * L.head_dim);
  const int64_t block = std::max<int64_t>(1, kMaxRowsPerItem / L.group);
  std::vector<Item> items;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t begin = cu_q_lens[s], end = cu_q_lens[s + 1];
    const int32_t q_len = end - begin;
    if (q_len <= 0 || begin < 0 || end > L.num_tokens) continue;
    const int32_t kv_len = kv_lens[s];
    if (kv_len < q_len || kv_len > L.pages_per_seq * L.page_size) {
      return ffi::Error::InvalidArgument(
          "ragged_paged_attention: sequence " + std::to_string(s) + " has kv_len " +
          std::to_string(kv_len) + " and q_len " + std::to_string(q_len) +
          "; need q_len <= kv_len <= pages_per_seq * page_size (" +
          std::to_string(L.pages_per_seq * L.page_size) + ")");
    }
    for (int32_t q0 = 0; q0 < q_len; q0 += block) {
      const int32_t nq = static_cast<int32_t>(std::min<int64_t>(block, q_len - q0));
      for (int32_t h = 0; h < L.num_kv_heads; ++h) {
        items.push_back(Item{static_cast<int32_t>(s), h, begin + q0, nq, kv_len, q_len, q0});
      }
    }
  }
  // Costlier items (later query blocks see more keys) first, for better load balance.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.kv_len - a.q_len + a.q0 > b.kv_len - b.q_len + b.q0;
  });
  Pool().ParallelFor(static_cast<int64_t>(items.size()), [&](int64_t i) {
    const Item& it = items[i];
    AttendItem<T>(L, it, queries, kv, page_indices + it.seq * L.pages_per_seq, out);
  });
  return ffi::Error::Success();
}

ffi::Error RaggedPagedAttentionImpl(ffi::AnyBuffer queries, ffi::AnyBuffer kv_pages,
                                    ffi::Buffer<ffi::S32> kv_lens,
                                    ffi::Buffer<ffi::S32> page_indices,
                                    ffi::Buffer<ffi::S32> cu_q_lens,
                                    ffi::Buffer<ffi::S32> num_seqs,
                                    ffi::Result<ffi::AnyBuffer> out, float sm_scale,
                                    int64_t sliding_window, int64_t chunk_size,
                                    float soft_cap) {
  const auto q_dims = queries.dimensions();
  const auto kv_dims = kv_pages.dimensions();
  const auto table_dims = page_indices.dimensions();
  if (q_dims.size() != 3 || kv_dims.size() != 4 || table_dims.size() != 2) {
    return ffi::Error::InvalidArgument("ragged_paged_attention: unexpected operand ranks");
  }
  Layout L;
  L.num_tokens = q_dims[0];
  L.num_q_heads = q_dims[1];
  L.head_dim = q_dims[2];
  L.page_size = kv_dims[1];
  L.num_kv_heads = kv_dims[2] / 2;
  L.group = L.num_q_heads / L.num_kv_heads;
  L.pages_per_seq = table_dims[1];
  L.sm_scale = sm_scale;
  L.soft_cap = soft_cap;
  L.sliding_window = sliding_window;
  L.chunk_size = chunk_size;
  if (L.head_dim > 256 || L.group > kMaxRowsPerItem) {
    return ffi::Error::InvalidArgument(
        "ragged_paged_attention (cpu): head_dim must be <= 256 and num_q_heads / num_kv_heads "
        "<= 32, got head_dim " + std::to_string(L.head_dim) + " and group " +
        std::to_string(L.group));
  }
  const int64_t max_num_seqs = table_dims[0];
  const int64_t n = std::clamp<int64_t>(num_seqs.typed_data()[0], 0, max_num_seqs);
  if (queries.element_type() == ffi::DataType::F32 &&
      kv_pages.element_type() == ffi::DataType::F32) {
    return Run<float>(L, static_cast<const float*>(queries.untyped_data()),
                      static_cast<const float*>(kv_pages.untyped_data()), kv_lens.typed_data(),
                      page_indices.typed_data(), cu_q_lens.typed_data(), n,
                      static_cast<float*>(out->untyped_data()));
  }
  if (queries.element_type() == ffi::DataType::BF16 &&
      kv_pages.element_type() == ffi::DataType::BF16) {
    return Run<uint16_t>(L, static_cast<const uint16_t*>(queries.untyped_data()),
                         static_cast<const uint16_t*>(kv_pages.untyped_data()),
                         kv_lens.typed_data(), page_indices.typed_data(), cu_q_lens.typed_data(),
                         n, static_cast<uint16_t*>(out->untyped_data()));
  }
  return ffi::Error::InvalidArgument(
      "ragged_paged_attention (cpu): queries and kv_pages must both be float32 or both "
      "bfloat16");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeRaggedPagedAttention, RaggedPagedAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("sm_scale")
                                  .Attr<int64_t>("sliding_window")
                                  .Attr<int64_t>("chunk_size")
                                  .Attr<float>("soft_cap"));
