// Lookup-free quantisation (LFQ, Yu et al. 2023, MAGVIT-v2, https://arxiv.org/abs/2310.05737): CPU kernels.
//
//   encode: index = sum_d [z_d > 0] * 2^(D-1-d)          (channel 0 is the most significant bit; NaN -> bit 0)
//           read in place from any strided (O, D, I) view: the Python dispatcher passes the codec's channel-first
//           (B, D, T) latents without the (B, T, D) copy.
//   decode: code_d = +scale if bit (D-1-d) of index is set, else -scale
//
// Both loops run over a chunk of rows as one flat array against per-channel bit weights tiled to the same length,
// so gcc vectorises them (compare -> mask -> and; and -> select); only the per-row ORs are short scalar loops.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#include "aion_fast/cpu_kernels.h"

namespace aion_fast {
namespace cpu {
namespace {

constexpr std::int64_t kParallelMinElements = 1 << 16;
// Encode does ~1 instruction per element: below this many a parallel region costs more than it saves.
constexpr std::int64_t kEncodeParallelMinElements = 1 << 18;

inline std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// w[r * D + d] = 2^(D-1-d) for r < rows.
void tiled_weights(std::int32_t* w, std::int64_t D, std::int64_t rows) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t d = 0; d < D; ++d) w[r * D + d] = std::int32_t{1} << (D - 1 - d);
}

}  // namespace

void lfq_encode_strided(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                        std::int64_t s_d, std::int64_t s_i, std::int32_t* __restrict out) {
  const bool parallel = O * I * D >= kEncodeParallelMinElements;
  if (s_d == 1 && s_i == D && (O == 1 || s_o == I * D)) {
    // Channels last and contiguous: (M, D) rows as one flat run per chunk against tiled bit weights.
    const std::int64_t M = O * I;
    const std::int64_t chunk = kScratch / D;
    alignas(64) std::int32_t w[kScratch];
    tiled_weights(w, D, chunk);
    const std::int64_t n_chunks = (M + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t c = 0; c < n_chunks; ++c) {
      alignas(64) std::int32_t bits[kScratch];
      const std::int64_t r0 = c * chunk;
      const std::int64_t rows = min64(chunk, M - r0);
      const std::int64_t n = rows * D;
      const float* __restrict zc = z + r0 * D;
      // vectorised (compare -> all-ones mask -> and); NaN > 0 is false
      for (std::int64_t k = 0; k < n; ++k) bits[k] = w[k] & -static_cast<std::int32_t>(zc[k] > 0.0f);
      for (std::int64_t r = 0; r < rows; ++r) {
        std::int32_t acc = 0;
        for (std::int64_t d = 0; d < D; ++d) acc |= bits[r * D + d];
        out[r0 + r] = acc;
      }
    }
    return;
  }
  // Any other layout, e.g. the spectrum codec's channel-first (B, D, T) read in place: tiles of positions, one pass
  // per channel OR-ing its bit into the tile's indices (unit stride over positions when s_i == 1).
  const std::int64_t tiles_per_outer = (I + kScratch - 1) / kScratch;
  const std::int64_t n_tiles = O * tiles_per_outer;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t k = 0; k < n_tiles; ++k) {
    const std::int64_t o = k / tiles_per_outer;
    const std::int64_t i0 = (k % tiles_per_outer) * kScratch;
    const std::int64_t n = min64(kScratch, I - i0);
    std::int32_t* __restrict dst = out + o * I + i0;
    for (std::int64_t j = 0; j < n; ++j) dst[j] = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      const float* __restrict src = z + o * s_o + d * s_d + i0 * s_i;
      const std::int32_t w = std::int32_t{1} << (D - 1 - d);
      if (s_i == 1) {
        for (std::int64_t j = 0; j < n; ++j) dst[j] |= w & -static_cast<std::int32_t>(src[j] > 0.0f);  // vectorised
      } else {
        for (std::int64_t j = 0; j < n; ++j) dst[j] |= w & -static_cast<std::int32_t>(src[j * s_i] > 0.0f);
      }
    }
  }
}

std::int64_t lfq_decode(const std::int32_t* __restrict index, std::int64_t M, std::int64_t D, float scale,
                        float* __restrict out) {
  const std::int64_t chunk = kScratch / D;
  alignas(64) std::int32_t w[kScratch];
  tiled_weights(w, D, chunk);
  const std::int64_t n_chunks = (M + chunk - 1) / chunk;
  const std::int64_t limit = std::int64_t{1} << D;
  std::int64_t n_bad = 0;

#pragma omp parallel for schedule(static) if (M * D >= kParallelMinElements) reduction(+ : n_bad)
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    alignas(64) std::int32_t a[kScratch];
    const std::int64_t r0 = c * chunk;
    const std::int64_t rows = min64(chunk, M - r0);
    const std::int64_t n = rows * D;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t d = 0; d < D; ++d) a[r * D + d] = index[r0 + r];
    float* __restrict o = out + r0 * D;
    for (std::int64_t k = 0; k < n; ++k) o[k] = (a[k] & w[k]) ? scale : -scale;  // vectorised
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t idx = index[r0 + r];
      if (idx < 0 || idx >= limit) {
        ++n_bad;
        for (std::int64_t d = 0; d < D; ++d) o[r * D + d] = __builtin_nanf("");
      }
    }
  }
  return n_bad;
}

}  // namespace cpu
}  // namespace aion_fast
