// Transposes for XLA:CPU (XLA FFI custom calls; see dense.py): the last two axes of a
// float32 array swapped, to bfloat16 (each value rounded as XLA's convert rounds it: to
// nearest, ties to even; NaN stays a quiet NaN) or to float32:
//
//   y[..., d, n] = bf16(x[..., n, d])   (PeTransposeToBfloat16)
//   y[..., d, n] = x[..., n, d]         (PeTransposeFloat32)
//
// They exist so that XLA sees a bfloat16 weight gradient as a product of two row-major
// operands. Written in XLA, a transpose of an operand or of the product is folded into the
// product, which YNNPACK then declines (its bfloat16 products need row-major operands), and
// XLA computes it in float32 instead, or, for a product over vmapped seeds, fails.
// One thread per call: XLA runs independent operations beside it.

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu_vectors.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Bits = uint32_t __attribute__((vector_size(4 * kLanes)));

// The bfloat16 bits of float32 bits (in the low 16 bits of each lane).
inline Bits RoundToBfloat16(Bits b) {
  const Bits is_nan = (b & 0x7fffffffu) > 0x7f800000u;
  return is_nan ? ((b >> 16) | 0x40u) : (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

inline Bits Identity(Bits b) { return b; }

// Out: the output's element (uint16_t for bfloat16, uint32_t for float32); Convert: its
// bits from float32 bits.
template <typename Out, Bits (*Convert)(Bits), ffi::DataType kOut>
ffi::Error Transpose(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<kOut> y) {
  const auto dims = x.dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument("transpose: x needs two axes");
  const int64_t N = dims[dims.size() - 2], D = dims[dims.size() - 1];
  const int64_t groups = N * D == 0 ? 0 : x.element_count() / (N * D);
  constexpr int64_t kRows = 16;  // A tile of kRows rows by kLanes channels goes through `tile`.
  Out tile[kRows][kLanes];
  for (int64_t g = 0; g < groups; ++g) {
    const float* in = x.typed_data() + g * N * D;
    Out* out = reinterpret_cast<Out*>(y->untyped_data()) + g * N * D;
    for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
      const int64_t lanes = std::min<int64_t>(kLanes, D - d0);
      for (int64_t n0 = 0; n0 < N; n0 += kRows) {
        const int64_t rows = std::min(kRows, N - n0);
        for (int64_t i = 0; i < rows; ++i) {
          Bits b{};
          const float* src = in + (n0 + i) * D + d0;
          if (lanes == kLanes) std::memcpy(&b, src, sizeof b);  // One unaligned vector load.
          else std::memcpy(&b, src, 4 * lanes);
          const Bits r = Convert(b);
          for (int64_t l = 0; l < lanes; ++l) tile[i][l] = static_cast<Out>(r[l]);
        }
        for (int64_t l = 0; l < lanes; ++l) {
          Out* row = out + (d0 + l) * N + n0;
          for (int64_t i = 0; i < rows; ++i) row[i] = tile[i][l];
        }
      }
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeTransposeToBfloat16, (Transpose<uint16_t, RoundToBfloat16, ffi::BF16>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::BF16>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(PeTransposeFloat32, (Transpose<uint32_t, Identity, ffi::F32>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
