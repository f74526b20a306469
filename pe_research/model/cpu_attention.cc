// Fused softmax attention for XLA:CPU (an XLA FFI custom call; see cpu_attention.py).
//
//   s_tj = q_t . k_j + bias_tj,   bias_tj = 0 if key j is visible to query t, else -1e9
//   o_t  = sum_j exp(s_tj - m_t) v_j / l_t,   m_t = max_j s_tj,   l_t = sum_j exp(s_tj - m_t)
//
// One head at a time, one query row at a time: the row's S logits live in a small buffer
// (in cache) and never reach memory, as in FlashAttention (Dao et al. 2022, arXiv
// 2205.14135); the backward recomputes them from the saved m and l (kept apart: near the
// -1e9 of a row with no visible key, m + log l would round log l away). Key j is visible to query
// t when key_bias_j == 0 (else key_bias_j, -1e9, is added) and, if causal, j <= row_t (else
// -1e9 is added instead): the same single -1e9 the XLA path adds (attention_kernels.py).
// The loops run over keys, contiguous in the transposed k^T and v^T, so the compiler
// vectorizes them; exp is a polynomial that vectorizes too. Heads are spread over XLA's
// intra-op thread pool, each head written by one thread: results do not depend on the
// number of threads.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kMasked = -1e9f;

// exp(x) for x <= 0 (relative error ~2e-7; exactly 0 below -87): 2^n * p(r), x = n ln2 + r.
inline float ExpNonPositive(float x) {
  const float clamped = std::max(x, -87.0f);
  const float shifted = clamped * 1.44269504f + 12582912.0f;  // 1.5 * 2^23: rounds to n.
  const float n = shifted - 12582912.0f;
  const float r = (clamped - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  bits = (bits - 0x4B400000 + 127) << 23;  // n + 127 in the exponent field.
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x < -87.0f ? 0.0f : p * scale;
}

// Runs body(i) for i in [0, n) on the calling thread and the pool's other threads. A task
// that starts late finds no index left and returns, so waiting never deadlocks.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const F& body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, &body] {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      body(i);
      if (state->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->all_done.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->all_done.wait(lock, [&] { return state->done.load() == n; });
}

// Shapes: q [G, H, T, K], k and v [G, H, S, K], key_bias [G, S], rows [G, T]; G is every
// leading axis (batch, and any vmapped ones).
struct Dims {
  int64_t groups, heads, queries, keys, width;
};

Dims GetDims(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  const size_t rank = qd.size();
  return {static_cast<int64_t>(q.element_count() / (qd[rank - 3] * qd[rank - 2] * qd[rank - 1])),
          qd[rank - 3], qd[rank - 2], kd[rank - 2], qd[rank - 1]};
}

// The transpose [S, K] -> [K, S] of one head's keys or values.
void Transpose(const float* x, int64_t keys, int64_t width, float* out) {
  for (int64_t j = 0; j < keys; ++j)
    for (int64_t d = 0; d < width; ++d) out[d * keys + j] = x[j * width + d];
}

// s_j = x . y_j for one row x and yT = [K, S]; with K known at compile time the loop over
// keys keeps s_j in a register across the K products.
template <int kWidth>
void RowProductsOf(const float* x, const float* yT, int64_t keys, float* s) {
#pragma omp simd
  for (int64_t j = 0; j < keys; ++j) {
    float acc = 0.0f;
    for (int d = 0; d < kWidth; ++d) acc += x[d] * yT[d * keys + j];
    s[j] = acc;
  }
}

void RowProducts(const float* x, const float* yT, int64_t keys, int64_t width, float* s) {
  switch (width) {
    case 8: return RowProductsOf<8>(x, yT, keys, s);
    case 16: return RowProductsOf<16>(x, yT, keys, s);
    case 32: return RowProductsOf<32>(x, yT, keys, s);
    case 64: return RowProductsOf<64>(x, yT, keys, s);
  }
  for (int64_t j = 0; j < keys; ++j) s[j] = 0.0f;
  for (int64_t d = 0; d < width; ++d)
    for (int64_t j = 0; j < keys; ++j) s[j] += x[d] * yT[d * keys + j];
}

// s_j = q . k_j + bias_j for one query row (kT: [K, S]).
void RowLogits(const float* q, const float* kT, const float* key_bias, bool causal, int32_t row,
               int64_t keys, int64_t width, float* s) {
  RowProducts(q, kT, keys, width, s);
  for (int64_t j = 0; j < keys; ++j) {
    const bool hidden = key_bias[j] != 0.0f || (causal && j > row);
    s[j] += hidden ? kMasked : 0.0f;
  }
}

// max_j s_j, kept in 16 lanes so that it vectorizes.
float RowMax(const float* s, int64_t keys) {
  float lanes[16];
  std::fill(lanes, lanes + 16, -INFINITY);
  int64_t j = 0;
  for (; j + 16 <= keys; j += 16) {
#pragma omp simd
    for (int l = 0; l < 16; ++l) lanes[l] = lanes[l] < s[j + l] ? s[j + l] : lanes[l];
  }
  for (; j < keys; ++j) lanes[0] = std::max(lanes[0], s[j]);
  return *std::max_element(lanes, lanes + 16);
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> key_bias, ffi::Buffer<ffi::S32> rows,
                   bool causal, ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> row_max,
                   ffi::ResultBuffer<ffi::F32> row_sum) {
  const Dims n = GetDims(q, k);
  const int64_t T = n.queries, S = n.keys, K = n.width;
  ParallelFor(pool, n.groups * n.heads, [&](int64_t head) {
    const int64_t group = head / n.heads;
    std::vector<float> kT(K * S), vT(K * S), s(S);
    Transpose(k.typed_data() + head * S * K, S, K, kT.data());
    Transpose(v.typed_data() + head * S * K, S, K, vT.data());
    for (int64_t t = 0; t < T; ++t) {
      RowLogits(q.typed_data() + (head * T + t) * K, kT.data(), key_bias.typed_data() + group * S, causal,
                rows.typed_data()[group * T + t], S, K, s.data());
      const float max = RowMax(s.data(), S);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < S; ++j) {
        s[j] = ExpNonPositive(s[j] - max);
        sum += s[j];
      }
      float* o = out->typed_data() + (head * T + t) * K;
      for (int64_t d = 0; d < K; ++d) {
        const float* vd = vT.data() + d * S;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < S; ++j) acc += s[j] * vd[j];
        o[d] = acc / sum;
      }
      row_max->typed_data()[head * T + t] = max;
      row_sum->typed_data()[head * T + t] = sum;
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> key_bias, ffi::Buffer<ffi::S32> rows,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> row_max, ffi::Buffer<ffi::F32> row_sum,
                    ffi::Buffer<ffi::F32> dout,
                    bool causal, ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv) {
  const Dims n = GetDims(q, k);
  const int64_t T = n.queries, S = n.keys, K = n.width;
  ParallelFor(pool, n.groups * n.heads, [&](int64_t head) {
    const int64_t group = head / n.heads;
    std::vector<float> kT(K * S), vT(K * S), dkT(K * S, 0.0f), dvT(K * S, 0.0f), p(S), ds(S);
    Transpose(k.typed_data() + head * S * K, S, K, kT.data());
    Transpose(v.typed_data() + head * S * K, S, K, vT.data());
    for (int64_t t = 0; t < T; ++t) {
      const int64_t at = head * T + t;
      const float* qt = q.typed_data() + at * K;
      const float* ot = out.typed_data() + at * K;
      const float* dot = dout.typed_data() + at * K;
      RowLogits(qt, kT.data(), key_bias.typed_data() + group * S, causal, rows.typed_data()[group * T + t], S, K,
                p.data());
      const float max = row_max.typed_data()[at], inverse_sum = 1.0f / row_sum.typed_data()[at];
      for (int64_t j = 0; j < S; ++j) p[j] = ExpNonPositive(p[j] - max) * inverse_sum;
      // ds_j = p_j (do . v_j - do . o)
      float do_o = 0.0f;
      for (int64_t d = 0; d < K; ++d) do_o += dot[d] * ot[d];
      RowProducts(dot, vT.data(), S, K, ds.data());
      for (int64_t j = 0; j < S; ++j) ds[j] = p[j] * (ds[j] - do_o);
      float* dqt = dq->typed_data() + at * K;
      for (int64_t d = 0; d < K; ++d) {
        const float* kd = kT.data() + d * S;
        float* dkd = dkT.data() + d * S;
        float* dvd = dvT.data() + d * S;
        const float qd = qt[d], dod = dot[d];
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < S; ++j) {
          acc += ds[j] * kd[j];
          dkd[j] += ds[j] * qd;
          dvd[j] += p[j] * dod;
        }
        dqt[d] = acc;
      }
    }
    Transpose(dkT.data(), K, S, dk->typed_data() + head * S * K);
    Transpose(dvT.data(), K, S, dv->typed_data() + head * S * K);
  });
  return ffi::Error::Success();
}

// The operands both handlers start with: q, k, v, key_bias, rows.
auto BindOperands() {
  using F32 = ffi::Buffer<ffi::F32>;
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<ffi::Buffer<ffi::S32>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeAttentionForward, Forward,
                              BindOperands()
                                  .Attr<bool>("causal")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // out
                                  .Ret<ffi::Buffer<ffi::F32>>()    // row max m
                                  .Ret<ffi::Buffer<ffi::F32>>());  // row sum l

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeAttentionBackward, Backward,
                              BindOperands()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // row max m
                                  .Arg<ffi::Buffer<ffi::F32>>()  // row sum l
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d out
                                  .Attr<bool>("causal")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()    // dk
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dv
