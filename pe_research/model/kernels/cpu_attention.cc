// Fused softmax attention for XLA:CPU (an XLA FFI custom call; see cpu_attention.py).
//
//   s_tj = q_t . k_j + a_tj + bias_tj,   bias_tj = 0 if key j is visible to query t, else -1e9
//   o_t  = sum_j exp(s_tj - m_t) v_j / l_t,   m_t = max_j s_tj,   l_t = sum_j exp(s_tj - m_t)
//
// with a_tj = 0, or ALiBi's distance bias computed from the positions i_t, j_j of query and
// key (Press et al. 2022): a = -slope_h (i - j) (`bias` kLinear) or -slope_h |i - j|
// (kSymmetric).
//
// One head at a time, kLanes query rows at a time, one row per vector lane: the block's
// logits ([S] vectors) live in a small buffer, in cache, and never reach memory, as in
// FlashAttention (Dao et al. 2022, arXiv 2205.14135); row maxima, sums and outputs are
// lane-wise, with no sum across lanes. The backward recomputes the logits from the saved m
// and l (kept apart: near the -1e9 of a row with no visible key, m + log l would round
// log l away) in two passes: dq over blocks of query rows, then dk and dv over blocks of
// kLanes keys (one key per lane), so that again no sum crosses the lanes. Key j is
// visible to query t when key_bias_j == 0 (else key_bias_j, -1e9, is added) and, if
// causal, j <= row_t (else -1e9 is added instead): the same single -1e9 the XLA path adds
// (kernels/attention.py). Channels go kChunk at a time, so that a chunk of accumulators
// (one vector per channel) stays in registers; rows of keys and values are read in place
// when K is a multiple of kChunk, else from a zero-padded copy. Vectors are GCC/Clang
// vector extensions, lowered to what the CPU has (AVX-512, AVX2, SSE, NEON); exp is a
// polynomial. Heads are spread over XLA's intra-op thread pool, each head written by one
// thread: results do not depend on the number of threads.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cpu_vectors.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kMasked = -1e9f;
// Query rows per vector: kLanes (cpu_vectors.h).
constexpr int kChunk = 8;   // Channels held in registers at once.

inline Floats Splat(float x) { return Floats{} + x; }
// Lane-wise select, which GCC and Clang offer on vectors in C++ (max_ps, blend).
inline Floats Max(Floats a, Floats b) { return a > b ? a : b; }

// exp(x) for x <= 0 (relative error ~2e-7; exactly 0 below -87): 2^n * p(r), x = n ln2 + r.
inline Floats ExpNonPositive(Floats x) {
  const Floats clamped = Max(x, Splat(-87.0f));
  const Floats shifted = clamped * 1.44269504f + 12582912.0f;  // 1.5 * 2^23: rounds to n.
  const Floats n = shifted - 12582912.0f;
  const Floats r = (clamped - n * 0.693145752f) - n * 1.42860677e-6f;
  Floats p = Splat(1.0f / 720);
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Floats scale = (Floats)(((Ints)shifted - 0x4B400000 + 127) << 23);  // 2^n.
  return x < -87.0f ? Floats{} : p * scale;
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
// leading axis (batch, and any vmapped ones). P is K rounded up to kChunk.
struct Dims {
  int64_t groups, heads, queries, keys, width, padded;
};

Dims GetDims(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  const size_t rank = qd.size();
  const int64_t width = qd[rank - 1];
  return {static_cast<int64_t>(q.element_count() / (qd[rank - 3] * qd[rank - 2] * width)), qd[rank - 3],
          qd[rank - 2], kd[rank - 2], width, (width + kChunk - 1) / kChunk * kChunk};
}

// Rows of x [count, K] as [count, P] rows: in place, or copied with zeros in the extra
// channels (which add nothing to any product).
class PaddedRows {
 public:
  PaddedRows(const float* x, int64_t count, const Dims& n) : data_(x) {
    if (n.padded == n.width) return;
    copy_.assign(count * n.padded, 0.0f);
    for (int64_t r = 0; r < count; ++r) std::copy(x + r * n.width, x + (r + 1) * n.width, &copy_[r * n.padded]);
    data_ = copy_.data();
  }
  const float* data() const { return data_; }

 private:
  const float* data_;
  std::vector<float> copy_;
};

// Rows first .. first + kLanes - 1 of x [count, K] as P vectors, one per channel; rows past
// count and channels past K are 0.
void LoadBlock(const float* x, int64_t first, int64_t count, const Dims& n, Floats* block) {
  std::fill(block, block + n.padded, Floats{});
  for (int l = 0; l < kLanes && first + l < count; ++l)
    for (int64_t d = 0; d < n.width; ++d) block[d][l] = x[(first + l) * n.width + d];
}

void StoreBlock(const Floats* block, int64_t first, int64_t count, const Dims& n, float* x) {
  for (int l = 0; l < kLanes && first + l < count; ++l)
    for (int64_t d = 0; d < n.width; ++d) x[(first + l) * n.width + d] = block[d][l];
}

// x[first .. first + kLanes - 1] of x [count]; `fill` past count.
template <typename Vector, typename T>
Vector LoadLanes(const T* x, int64_t first, int64_t count, T fill) {
  Vector lanes = Vector{} + fill;
  for (int l = 0; l < kLanes && first + l < count; ++l) lanes[l] = x[first + l];
  return lanes;
}

void StoreLanes(Floats lanes, int64_t first, int64_t count, float* x) {
  for (int l = 0; l < kLanes && first + l < count; ++l) x[first + l] = lanes[l];
}

// out_r = sum_d x_d y_rd for every row r of y [count, P]; x one vector per channel.
void Products(const Floats* x, const float* y, int64_t count, int64_t P, Floats* out) {
  for (int64_t c = 0; c < P; c += kChunk) {
    Floats xc[kChunk];
    std::copy(x + c, x + c + kChunk, xc);
    for (int64_t r = 0; r < count; ++r) {
      Floats acc = c == 0 ? Floats{} : out[r];
      for (int i = 0; i < kChunk; ++i) acc += xc[i] * y[r * P + c + i];
      out[r] = acc;
    }
  }
}

// out_d = sum_r w_r y_rd for every channel d; y [count, P], out one vector per channel.
void WeightedSum(const Floats* w, const float* y, int64_t count, int64_t P, Floats* out) {
  for (int64_t c = 0; c < P; c += kChunk) {
    Floats acc[kChunk] = {};
    for (int64_t r = 0; r < count; ++r)
      for (int i = 0; i < kChunk; ++i) acc[i] += w[r] * y[r * P + c + i];
    std::copy(acc, acc + kChunk, out + c);
  }
}

// s + bias: -1e9 where key_bias != 0 or, if causal, key > row.
inline Floats Masked(Floats s, Floats key_bias, Ints key, Ints row, bool causal) {
  Ints hidden = key_bias != 0.0f;
  if (causal) hidden |= key > row;
  return s + (Floats)(hidden & (Ints)Splat(kMasked));
}

// The distance bias of ALiBi (Press et al. 2022) for offsets i - j of query and key
// positions: -slope (i - j) (kLinear; causal, where j <= i) or -slope |i - j| (kSymmetric).
enum DistanceBias : int32_t { kNone = 0, kLinear = 1, kSymmetric = 2 };

inline Floats Bias(Floats offset, float slope, int32_t kind) {
  if (kind == kSymmetric) offset = offset < 0.0f ? -offset : offset;
  return offset * -slope;
}

inline Ints Iota(int64_t first) {
  Ints lanes;
  for (int l = 0; l < kLanes; ++l) lanes[l] = static_cast<int32_t>(first + l);
  return lanes;
}

// The operands and attributes both handlers take, whole (not yet one head's).
struct Inputs {
  const float *q, *k, *v, *key_bias;
  const int32_t* rows;
  const float *q_positions, *k_positions;  // [G, T], [G, S]
  bool causal;
  int32_t bias;                  // A DistanceBias.
  ffi::Span<const float> slopes;  // [H], one per head.
};

// One head's operands; blocks of kLanes query rows (or keys) are loaded from them.
struct Head {
  Head(const Dims& n, int64_t head, const Inputs& in)
      : n(n),
        causal(in.causal),
        bias(in.bias),
        slope(in.slopes[head % n.heads]),
        q(in.q + head * n.queries * n.width),
        key_bias(in.key_bias + head / n.heads * n.keys),
        rows(in.rows + head / n.heads * n.queries),
        q_positions(in.q_positions + head / n.heads * n.queries),
        k_positions(in.k_positions + head / n.heads * n.keys),
        keys(in.k + head * n.keys * n.width, n.keys, n),
        values(in.v + head * n.keys * n.width, n.keys, n),
        end(VisibleEnd()) {}

  // Logits s_j for queries t0 .. t0 + kLanes - 1 (lanes) and the keys j < end; q_block:
  // their q. Returns max_j s_j.
  Floats RowBlockLogits(const Floats* q_block, int64_t t0, Floats* s) const {
    Products(q_block, keys.data(), end, n.padded, s);
    const Ints row = LoadLanes<Ints>(rows, t0, n.queries, int32_t{0});
    const Floats q_position = LoadLanes<Floats>(q_positions, t0, n.queries, 0.0f);
    Floats max = Splat(-INFINITY);
    for (int64_t j = 0; j < end; ++j) {
      if (bias != kNone) s[j] += Bias(q_position - k_positions[j], slope, bias);
      s[j] = Masked(s[j], Splat(key_bias[j]), Ints{} + static_cast<int32_t>(j), row, causal);
      max = Max(max, s[j]);
    }
    return max;
  }

  const Dims& n;
  const bool causal;
  const int32_t bias;
  const float slope;
  const float* q;
  const float* key_bias;
  const int32_t* rows;
  const float *q_positions, *k_positions;
  const PaddedRows keys, values;
  // Keys from `end` on (trailing padding) are skipped: hidden from every query, they add
  // exactly 0 (exp(-1e9) underflows) wherever each query sees some key. Else end = S.
  const int64_t end;

 private:
  int64_t VisibleEnd() const {
    const float* first = std::find(key_bias, key_bias + n.keys, 0.0f);
    if (first == key_bias + n.keys) return n.keys;
    if (causal && *std::min_element(rows, rows + n.queries) < first - key_bias) return n.keys;
    int64_t last = n.keys - 1;
    while (key_bias[last] != 0.0f) --last;
    return last + 1;
  }
};

using F32 = ffi::Buffer<ffi::F32>;

Inputs GetInputs(const F32& q, const F32& k, const F32& v, const F32& key_bias, const ffi::Buffer<ffi::S32>& rows,
                 const F32& q_positions, const F32& k_positions, bool causal, int32_t bias,
                 ffi::Span<const float> slopes) {
  return {q.typed_data(), k.typed_data(), v.typed_data(), key_bias.typed_data(), rows.typed_data(),
          q_positions.typed_data(), k_positions.typed_data(), causal, bias, slopes};
}

ffi::Error Forward(ffi::ThreadPool pool, F32 q, F32 k, F32 v, F32 key_bias, ffi::Buffer<ffi::S32> rows,
                   F32 q_positions, F32 k_positions, bool causal, int32_t bias, ffi::Span<const float> slopes,
                   ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> row_max,
                   ffi::ResultBuffer<ffi::F32> row_sum) {
  const Dims n = GetDims(q, k);
  const int64_t T = n.queries, S = n.keys;
  const Inputs in = GetInputs(q, k, v, key_bias, rows, q_positions, k_positions, causal, bias, slopes);
  ParallelFor(pool, n.groups * n.heads, [&](int64_t h) {
    const Head head(n, h, in);
    std::vector<Floats> s(S), q_block(n.padded), o_block(n.padded);
    for (int64_t t0 = 0; t0 < T; t0 += kLanes) {
      LoadBlock(head.q, t0, T, n, q_block.data());
      const Floats max = head.RowBlockLogits(q_block.data(), t0, s.data());
      Floats sum{};
      for (int64_t j = 0; j < head.end; ++j) {
        s[j] = ExpNonPositive(s[j] - max);
        sum += s[j];
      }
      WeightedSum(s.data(), head.values.data(), head.end, n.padded, o_block.data());
      for (Floats& o : o_block) o /= sum;
      StoreBlock(o_block.data(), t0, T, n, out->typed_data() + h * T * n.width);
      StoreLanes(max, t0, T, row_max->typed_data() + h * T);
      StoreLanes(sum, t0, T, row_sum->typed_data() + h * T);
    }
  });
  return ffi::Error::Success();
}

// The backward in two passes with no sum across lanes: dq over blocks of query rows, then
// dk and dv over blocks of keys, each recomputing p_tj = exp(s_tj - m_t) / l_t and
//   ds_tj = p_tj (do_t . v_j - do_t . o_t),  dq_t = sum_j ds_tj k_j,
//   dk_j = sum_t ds_tj q_t,  dv_j = sum_t p_tj do_t.
ffi::Error Backward(ffi::ThreadPool pool, F32 q, F32 k, F32 v, F32 key_bias, ffi::Buffer<ffi::S32> rows,
                    F32 q_positions, F32 k_positions, F32 out, F32 row_max, F32 row_sum, F32 dout, bool causal,
                    int32_t bias, ffi::Span<const float> slopes, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  const Dims n = GetDims(q, k);
  const int64_t T = n.queries, S = n.keys, K = n.width;
  const Inputs in = GetInputs(q, k, v, key_bias, rows, q_positions, k_positions, causal, bias, slopes);
  ParallelFor(pool, n.groups * n.heads, [&](int64_t h) {
    const Head head(n, h, in);
    const float* o = out.typed_data() + h * T * K;
    const float* d_o = dout.typed_data() + h * T * K;
    const float* m = row_max.typed_data() + h * T;
    const float* l = row_sum.typed_data() + h * T;
    std::vector<float> do_o(T, 0.0f), inverse_sum(T);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t d = 0; d < K; ++d) do_o[t] += d_o[t * K + d] * o[t * K + d];
      inverse_sum[t] = 1.0f / l[t];
    }
    const int64_t longest = std::max(T, S);
    std::vector<Floats> s(longest), ds(longest), x_block(n.padded), y_block(n.padded), out_block(n.padded);

    // dq, kLanes query rows at a time (lanes: rows; rows past T get m = 0, 1 / l = 1: finite p).
    for (int64_t t0 = 0; t0 < T; t0 += kLanes) {
      LoadBlock(head.q, t0, T, n, x_block.data());
      LoadBlock(d_o, t0, T, n, y_block.data());
      head.RowBlockLogits(x_block.data(), t0, s.data());
      Products(y_block.data(), head.values.data(), head.end, n.padded, ds.data());
      const Floats max = LoadLanes<Floats>(m, t0, T, 0.0f);
      const Floats inverse = LoadLanes<Floats>(inverse_sum.data(), t0, T, 1.0f);
      const Floats delta = LoadLanes<Floats>(do_o.data(), t0, T, 0.0f);
      for (int64_t j = 0; j < head.end; ++j) ds[j] = ExpNonPositive(s[j] - max) * inverse * (ds[j] - delta);
      WeightedSum(ds.data(), head.keys.data(), head.end, n.padded, out_block.data());
      StoreBlock(out_block.data(), t0, T, n, dq->typed_data() + h * T * K);
    }

    // dk and dv, kLanes keys at a time (lanes: keys; keys past S are 0 and not stored);
    // keys from `end` on get none.
    std::fill(dk->typed_data() + (h * S + head.end) * K, dk->typed_data() + (h + 1) * S * K, 0.0f);
    std::fill(dv->typed_data() + (h * S + head.end) * K, dv->typed_data() + (h + 1) * S * K, 0.0f);
    const PaddedRows q_rows(head.q, T, n), do_rows(d_o, T, n);
    for (int64_t j0 = 0; j0 < head.end; j0 += kLanes) {
      LoadBlock(k.typed_data() + h * S * K, j0, S, n, x_block.data());
      LoadBlock(v.typed_data() + h * S * K, j0, S, n, y_block.data());
      Products(x_block.data(), q_rows.data(), T, n.padded, s.data());
      Products(y_block.data(), do_rows.data(), T, n.padded, ds.data());
      const Floats key_bias_lanes = LoadLanes<Floats>(head.key_bias, j0, S, 0.0f);
      const Floats k_position = LoadLanes<Floats>(head.k_positions, j0, S, 0.0f);
      const Ints key = Iota(j0);
      for (int64_t t = 0; t < T; ++t) {
        if (head.bias != kNone) s[t] += Bias(head.q_positions[t] - k_position, head.slope, head.bias);
        const Floats logits = Masked(s[t], key_bias_lanes, key, Ints{} + head.rows[t], causal);
        s[t] = ExpNonPositive(logits - m[t]) * inverse_sum[t];
        ds[t] = s[t] * (ds[t] - do_o[t]);
      }
      WeightedSum(ds.data(), q_rows.data(), T, n.padded, out_block.data());
      StoreBlock(out_block.data(), j0, S, n, dk->typed_data() + h * S * K);
      WeightedSum(s.data(), do_rows.data(), T, n.padded, out_block.data());
      StoreBlock(out_block.data(), j0, S, n, dv->typed_data() + h * S * K);
    }
  });
  return ffi::Error::Success();
}

// The operands both handlers start with: q, k, v, key_bias, rows, q_positions, k_positions.
auto BindOperands() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<ffi::Buffer<ffi::S32>>()
      .Arg<F32>().Arg<F32>();
}

// The attributes both handlers end their inputs with.
template <typename Binding>
auto BindAttributes(Binding&& binding) {
  return std::move(binding).template Attr<bool>("causal").template Attr<int32_t>("bias").template Attr<
      ffi::Span<const float>>("slopes");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeAttentionForward, Forward,
                              BindAttributes(BindOperands())
                                  .Ret<ffi::Buffer<ffi::F32>>()    // out
                                  .Ret<ffi::Buffer<ffi::F32>>()    // row max m
                                  .Ret<ffi::Buffer<ffi::F32>>());  // row sum l

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeAttentionBackward, Backward,
                              BindAttributes(BindOperands()
                                                 .Arg<F32>()    // out
                                                 .Arg<F32>()    // row max m
                                                 .Arg<F32>()    // row sum l
                                                 .Arg<F32>())  // d out
                                  .Ret<ffi::Buffer<ffi::F32>>()    // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()    // dk
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dv
