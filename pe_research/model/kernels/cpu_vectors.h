// Vector types of the C++ kernels (cpu_attention.cc, cpu_layer_norm.cc, cpu_transpose.cc):
// GCC/Clang vector extensions of kLanes floats, the CPU's vector width as -march=native
// reports it (a wider type than the CPU has compiles, but GCC splits its compares and
// selects into slow code).
#ifndef PE_RESEARCH_CPU_VECTORS_H_
#define PE_RESEARCH_CPU_VECTORS_H_

#include <cstdint>

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif

using Floats = float __attribute__((vector_size(4 * kLanes)));
using Ints = int32_t __attribute__((vector_size(4 * kLanes)));

#endif  // PE_RESEARCH_CPU_VECTORS_H_
