// LayerNorm for XLA:CPU (an XLA FFI custom call; see layer_norm.py), Ba et al. 2016
// (arXiv 1607.06450), over the last axis of width D:
//
//   y = (x - mu) r gamma + beta,   mu = mean(x),   r = 1 / sqrt(mean((x - mu)^2) + eps)
//
// and its backward, with xh = (x - mu) r and g = dy gamma:
//
//   dx = r (g - mean(g) - xh mean(g xh)),   dgamma = sum_rows dy xh,   dbeta = sum_rows dy.
//
// XLA:CPU reduces each 64-wide row in a separate YNNPACK call and passes over the rows
// again for every elementwise step (about 190 us forward for 32 x 80 rows on the 2-core
// CPU); here a row is read once per pass, a vector of channels at a time, with the sums
// across the vector's lanes taken once per row. Rows of x are [G, N, D] with gamma and beta
// [G, D]: G covers leading axes that vmap added to gamma and beta too (seeds), 1 without.
// One thread per call: XLA runs independent operations beside it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_vectors.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// x[0 .. n) as a vector (n <= kLanes), `fill` in the lanes past n.
inline Floats Load(const float* x, int64_t n, float fill = 0.0f) {
  Floats v = Floats{} + fill;
  if (n == kLanes) std::memcpy(&v, x, sizeof v);  // One unaligned vector load.
  else for (int64_t l = 0; l < n; ++l) v[l] = x[l];
  return v;
}

inline void Store(Floats v, float* x, int64_t n) {
  if (n == kLanes) std::memcpy(x, &v, sizeof v);
  else for (int64_t l = 0; l < n; ++l) x[l] = v[l];
}

inline float Sum(Floats v) {
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += v[l];
  return total;
}

// f(i, n) for the vectors of a row of D channels: n = kLanes from channel i, then the rest.
template <typename F>
inline void ForEachVector(int64_t D, const F& f) {
  int64_t i = 0;
  for (; i + kLanes <= D; i += kLanes) f(i, kLanes);
  if (i < D) f(i, D - i);
}

// Rows of x, their width D, and how many rows share one gamma and beta.
struct Rows {
  int64_t count, width, per_group;
};

Rows GetRows(const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& gamma) {
  const int64_t width = x.dimensions().back(), count = x.element_count() / width;
  return {count, width, count / (gamma.element_count() / width)};
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gamma, ffi::Buffer<ffi::F32> beta, float epsilon,
                   ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                   ffi::ResultBuffer<ffi::F32> inverse_std) {
  const Rows rows = GetRows(x, gamma);
  const int64_t D = rows.width;
  for (int64_t r = 0; r < rows.count; ++r) {
    const float* x_r = x.typed_data() + r * D;
    const float* gamma_r = gamma.typed_data() + r / rows.per_group * D;
    const float* beta_r = beta.typed_data() + r / rows.per_group * D;
    Floats total{};
    ForEachVector(D, [&](int64_t i, int64_t n) { total += Load(x_r + i, n); });
    const float mu = Sum(total) / D;
    Floats squares{};
    ForEachVector(D, [&](int64_t i, int64_t n) {
      const Floats centered = Load(x_r + i, n, mu) - mu;  // 0 past n.
      squares += centered * centered;
    });
    const float inverse = 1.0f / std::sqrt(Sum(squares) / D + epsilon);
    float* y_r = y->typed_data() + r * D;
    ForEachVector(D, [&](int64_t i, int64_t n) {
      Store((Load(x_r + i, n) - mu) * inverse * Load(gamma_r + i, n) + Load(beta_r + i, n), y_r + i, n);
    });
    mean->typed_data()[r] = mu;
    inverse_std->typed_data()[r] = inverse;
  }
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gamma, ffi::Buffer<ffi::F32> mean,
                    ffi::Buffer<ffi::F32> inverse_std, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dx,
                    ffi::ResultBuffer<ffi::F32> dgamma, ffi::ResultBuffer<ffi::F32> dbeta) {
  const Rows rows = GetRows(x, gamma);
  const int64_t D = rows.width;
  std::fill(dgamma->typed_data(), dgamma->typed_data() + gamma.element_count(), 0.0f);
  std::fill(dbeta->typed_data(), dbeta->typed_data() + gamma.element_count(), 0.0f);
  for (int64_t r = 0; r < rows.count; ++r) {
    const int64_t group = r / rows.per_group;
    const float* x_r = x.typed_data() + r * D;
    const float* dy_r = dy.typed_data() + r * D;
    const float* gamma_r = gamma.typed_data() + group * D;
    float* dgamma_r = dgamma->typed_data() + group * D;
    float* dbeta_r = dbeta->typed_data() + group * D;
    const float mu = mean.typed_data()[r], inverse = inverse_std.typed_data()[r];
    Floats g_total{}, g_xh_total{};
    ForEachVector(D, [&](int64_t i, int64_t n) {
      const Floats xh = (Load(x_r + i, n) - mu) * inverse, d = Load(dy_r + i, n), g = d * Load(gamma_r + i, n);
      g_total += g;  // g and d are 0 past n.
      g_xh_total += g * xh;
      Store(Load(dgamma_r + i, n) + d * xh, dgamma_r + i, n);
      Store(Load(dbeta_r + i, n) + d, dbeta_r + i, n);
    });
    const float g_mean = Sum(g_total) / D, g_xh_mean = Sum(g_xh_total) / D;
    float* dx_r = dx->typed_data() + r * D;
    ForEachVector(D, [&](int64_t i, int64_t n) {
      const Floats xh = (Load(x_r + i, n) - mu) * inverse;
      Store(inverse * (Load(dy_r + i, n) * Load(gamma_r + i, n) - g_mean - xh * g_xh_mean), dx_r + i, n);
    });
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeLayerNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // gamma
                                  .Arg<F32>()  // beta
                                  .Attr<float>("epsilon")
                                  .Ret<F32>()    // y
                                  .Ret<F32>()    // mean
                                  .Ret<F32>());  // inverse standard deviation r

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeLayerNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // gamma
                                  .Arg<F32>()  // mean
                                  .Arg<F32>()  // inverse standard deviation r
                                  .Arg<F32>()  // dy
                                  .Ret<F32>()    // dx
                                  .Ret<F32>()    // dgamma
                                  .Ret<F32>());  // dbeta
