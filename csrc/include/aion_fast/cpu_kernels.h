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

// FSQ codes from indices.  index: (M,), levels: (D,), out: (M, D). Returns the number of indices outside
// [0, prod(levels)) (their rows are written as NaN).
std::int64_t fsq_decode(const std::int32_t* index, std::int64_t M, std::int64_t D, const std::int32_t* levels,
                        float* out);

// LFQ index from signs.  z: (M, D) with D <= 31, out: (M,).
void lfq_encode(const float* z, std::int64_t M, std::int64_t D, std::int32_t* out);

// LFQ codes from indices.  index: (M,), out: (M, D) with D <= 31. Returns the number of indices outside
// [0, 2^D) (their rows are written as NaN).
std::int64_t lfq_decode(const std::int32_t* index, std::int64_t M, std::int64_t D, float scale, float* out);

}  // namespace cpu
}  // namespace aion_fast
