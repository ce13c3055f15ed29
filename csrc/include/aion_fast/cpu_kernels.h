// Raw-pointer CPU kernels, compiled with the AION_FAST_ARCH flags (csrc/<op>/<op>_cpu.cpp).
//
// Those translation units include no pybind11 and no standard-library templates, use no heap and no exceptions
// (-fno-exceptions), so they define no inline (COMDAT) function that a baseline translation unit could also
// define: the linker can never pick an AVX2 copy for code that runs before the CPU check in build_info.cpp.
// `nm -C <op>_cpu.cpp.o | grep ' [WVu] '` must stay empty. Argument checking happens in the baseline wrappers
// (csrc/<op>/<op>.cpp); here M >= 0 rows, 1 <= D <= kMaxChannels channels, all arrays C-contiguous.
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// Scratch elements per thread; a chunk holds kScratch / D rows.
constexpr std::int64_t kScratch = 4096;
// Largest D the kernels take (one chunk must hold at least one row).
constexpr std::int64_t kMaxChannels = 1024;

// FSQ index from t = tanh(z + shift).  tanh_z: (M, D), half_l/offset/half_width/basis: (D,), out: (M,).
// Returns the number of rows with a NaN (written as -1).
std::int64_t fsq_encode_from_tanh(const float* tanh_z, std::int64_t M, std::int64_t D, const float* half_l,
                                  const float* offset, const float* half_width, const float* basis,
                                  std::int32_t* out);

// An element-wise float32 tanh with MKL VML's Fortran calling convention (VMSTANH_64_): out[k] = tanh(in[k]) for
// k < *n, accuracy/denormal/error flags in *mode. FSQ takes torch's own tanh through it (csrc/fsq/fsq_cpu.cpp).
using VmlTanhFn = void (*)(const std::int64_t* n, const float* in, float* out, const std::int64_t* mode);

// Fused FSQ encode of a strided (O, D, I) float32 view z (element strides s_o, s_d, s_i): per position (o, i),
// index = pack(round(tanh(z + shift) * half_l - offset)) into out[o * I + i], out: (O, I). shift, half_l, offset,
// half_width, basis: (D,). tanh_fn(mode) computes the tanh. Returns the number of positions with a NaN (index -1).
std::int64_t fsq_encode_strided(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                                std::int64_t s_d, std::int64_t s_i, const float* shift, const float* half_l,
                                const float* offset, const float* half_width, const float* basis, VmlTanhFn tanh_fn,
                                std::int64_t tanh_mode, std::int32_t* out);

// FSQ encode by exact decision thresholds (csrc/fsq/fsq_cpu.cpp): for a strided (O, D, I) float32 view z,
// x = z + shift[d] and index = base + sum_d basis[d] * #{t in [first[d], first[d+1]) : x >= thresholds[t]}, written
// to out[o * I + i], out: (O, I). Returns the number of positions with a NaN (index -1). With out64 not null the
// indices go there as int64 instead (widened tile by tile while cache-hot) and out is not used.
std::int64_t fsq_encode_thresholds(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                                   std::int64_t s_d, std::int64_t s_i, const float* shift, const float* thresholds,
                                   const std::int32_t* first, const std::int32_t* basis, std::int32_t base,
                                   std::int32_t* out, std::int64_t* out64 = nullptr);

// FSQ codes from indices.  index: (M,), levels: (D,), out: (M, D). Returns the number of indices outside
// [0, prod(levels)) (their rows are written as NaN).
std::int64_t fsq_decode(const std::int32_t* index, std::int64_t M, std::int64_t D, const std::int32_t* levels,
                        float* out);

// LFQ index from signs of a strided (O, D, I) float32 view z (element strides s_o, s_d, s_i), D <= 31:
// out[o * I + i] = sum_d [z(o, d, i) > 0] 2^(D-1-d), out: (O, I). With out64 not null: into out64 as int64
// (widened tile by tile), out not used.
void lfq_encode_strided(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                        std::int64_t s_d, std::int64_t s_i, std::int32_t* out, std::int64_t* out64 = nullptr);

// LFQ codes from indices.  index: (M,), out: (M, D) with D <= 31. Returns the number of indices outside
// [0, 2^D) (their rows are written as NaN).
std::int64_t lfq_decode(const std::int32_t* index, std::int64_t M, std::int64_t D, float scale, float* out);

}  // namespace cpu
}  // namespace aion_fast
