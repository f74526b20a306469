// Transposes for XLA:CPU (XLA FFI custom calls; see matmul.py): the last two axes of a
// float32 array swapped, to bfloat16 (each value rounded as XLA's convert rounds it: to
// nearest, ties to even; NaN stays a quiet NaN) or to float32:
//
//   y[..., d, n] = bf16(x[..., n, d])   (PeTransposeToBfloat16)
//   y[..., d, n] = x[..., n, d]         (PeTransposeFloat32)
//
// They exist so that XLA sees a weight gradient as a product of two row-major operands.
// Written in XLA, a transpose of an operand or of the product is folded into the product,
// which YNNPACK declines (its products want row-major operands); XLA then copies the
// operand in a transpose about 2x slower than this one (float32), or computes the product
// in float32 instead (bfloat16), or, over vmapped seeds, fails. Tiles of kLanes x kLanes
// are transposed in vector registers, in log2(kLanes) rounds of two-vector shuffles.
// One thread per call: XLA runs independent operations beside it.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu_vectors.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Bits = uint32_t __attribute__((vector_size(4 * kLanes)));
using Halves = uint16_t __attribute__((vector_size(2 * kLanes)));

// The bfloat16 bits of float32 bits (in the low 16 bits of each lane).
inline Bits RoundToBfloat16(Bits b) {
  const Bits is_nan = (b & 0x7fffffffu) > 0x7f800000u;
  return is_nan ? ((b >> 16) | 0x40u) : (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

inline Bits Identity(Bits b) { return b; }

// The two rows of a pair after SwapBlocks<h>: lane l of the first takes a[l] where bit h
// of l is clear, else b[l - h]; of the second, a[l + h], else b[l] (b's lanes numbered from
// kLanes). __builtin_shufflevector: Clang, and GCC from version 12.
template <int h, size_t... l>
inline Bits FirstOfPair(Bits a, Bits b, std::index_sequence<l...>) {
  return __builtin_shufflevector(a, b, (l & h ? kLanes + l - h : l)...);
}
template <int h, size_t... l>
inline Bits SecondOfPair(Bits a, Bits b, std::index_sequence<l...>) {
  return __builtin_shufflevector(a, b, (l & h ? kLanes + l : l + h)...);
}

// Swaps the off-diagonal h x h blocks of each 2h x 2h block of a kLanes x kLanes tile; for
// h = kLanes / 2, ..., 2, 1 in turn, that transposes it.
template <int h>
inline void SwapBlocks(Bits (&tile)[kLanes]) {
  constexpr auto lanes = std::make_index_sequence<kLanes>();
  for (int i = 0; i < kLanes; ++i) {
    if (i & h) continue;
    const Bits a = tile[i], b = tile[i + h];
    tile[i] = FirstOfPair<h>(a, b, lanes);
    tile[i + h] = SecondOfPair<h>(a, b, lanes);
  }
  if constexpr (h > 1) SwapBlocks<h / 2>(tile);
}

// Out: a vector of the output's elements (Halves for bfloat16, Bits for float32); Convert:
// their bits from float32 bits. Tiles at the edges are loaded and stored in part (zeros in,
// only the array's elements out).
template <typename Out, Bits (*Convert)(Bits), ffi::DataType kOut>
ffi::Error Transpose(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<kOut> y) {
  const auto dims = x.dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument("transpose: x needs two axes");
  const int64_t N = dims[dims.size() - 2], D = dims[dims.size() - 1];
  const int64_t groups = N * D == 0 ? 0 : x.element_count() / (N * D);
  using Element = std::remove_reference_t<decltype(Out{}[0])>;
  for (int64_t g = 0; g < groups; ++g) {
    const float* in = x.typed_data() + g * N * D;
    Element* out = reinterpret_cast<Element*>(y->untyped_data()) + g * N * D;
    for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
      const int64_t lanes = std::min<int64_t>(kLanes, D - d0);
      for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
        const int64_t rows = std::min<int64_t>(kLanes, N - n0);
        const bool whole = rows == kLanes && lanes == kLanes;  // Constant sizes: vector moves.
        Bits tile[kLanes] = {};
        for (int64_t i = 0; i < rows; ++i) {
          if (whole) std::memcpy(&tile[i], in + (n0 + i) * D + d0, sizeof(Bits));
          else std::memcpy(&tile[i], in + (n0 + i) * D + d0, 4 * lanes);
        }
        for (Bits& row : tile) row = Convert(row);
        SwapBlocks<kLanes / 2>(tile);
        for (int64_t l = 0; l < lanes; ++l) {
          const Out row = __builtin_convertvector(tile[l], Out);
          if (whole) std::memcpy(out + (d0 + l) * N + n0, &row, sizeof(Out));
          else std::memcpy(out + (d0 + l) * N + n0, &row, sizeof(Element) * rows);
        }
      }
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PeTransposeToBfloat16, (Transpose<Halves, RoundToBfloat16, ffi::BF16>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::BF16>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(PeTransposeFloat32, (Transpose<Bits, Identity, ffi::F32>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
