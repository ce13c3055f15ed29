// Lookup-free quantisation (LFQ, Yu et al. 2023, MAGVIT-v2, https://arxiv.org/abs/2310.05737): CPU kernels.
//
//   encode: index = sum_d [z_d > 0] * 2^(D-1-d)          (channel 0 is the most significant bit; NaN -> bit 0)
//           read in place from any strided (O, D, I) view: the Python dispatcher passes the codec's channel-first
//           (B, D, T) latents without the (B, T, D) copy.
//   decode: code_d = +scale if bit (D-1-d) of index is set, else -scale
//
// Channels-last contiguous rows and decode run over a chunk of rows as one flat array against per-channel bit
// weights tiled to the same length, so gcc vectorises them (compare -> mask -> and; and -> select).
// Positions contiguous (s_i == 1, e.g. the spectrum codec's channel-first (B, D, T) latents): with AVX2, 32 positions
// at a time are kept in four registers over all D channels, acc = 2 acc - (z > 0 ? -1 : 0), one pass over z and one
// store per position; this is memory-bound, so above kEncodeParallelMinElements both cores share the rows.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "aion_fast/cpu_kernels.h"

namespace aion_fast {
namespace cpu {
namespace {

constexpr std::int64_t kParallelMinElements = 1 << 16;
// Encode does ~1 instruction per element and is bound by the read of z: two cores read it about twice as fast once
// the work dwarfs the fork/join of a parallel region (cheap with libgomp's spinning threads).
constexpr std::int64_t kEncodeParallelMinElements = 1 << 16;
// Positions per parallel work item of the unit-stride encode.
constexpr std::int64_t kEncodeTile = 1024;

inline std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// w[r * D + d] = 2^(D-1-d) for r < rows.
void tiled_weights(std::int32_t* w, std::int64_t D, std::int64_t rows) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t d = 0; d < D; ++d) w[r * D + d] = std::int32_t{1} << (D - 1 - d);
}

// out[j] = index of position j for j < n: z points at channel 0 of the first position, channels s_d apart,
// positions unit-stride.
void encode_positions(const float* z, std::int64_t D, std::int64_t s_d, std::int64_t n, std::int32_t* __restrict out) {
  std::int64_t j = 0;
#if defined(__AVX2__)
  const __m256 zero = _mm256_setzero_ps();
  // z > 0 as an all-ones int32 mask (ordered compare: NaN gives 0); acc = 2 acc - mask shifts the earlier channels
  // up one bit and appends this one, so channel 0 ends as the most significant bit.
  for (; j + 32 <= n; j += 32) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const float* p = z + j;
    for (std::int64_t d = 0; d < D; ++d, p += s_d) {
      const __m256i m0 = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(p), zero, _CMP_GT_OQ));
      const __m256i m1 = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(p + 8), zero, _CMP_GT_OQ));
      const __m256i m2 = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(p + 16), zero, _CMP_GT_OQ));
      const __m256i m3 = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(p + 24), zero, _CMP_GT_OQ));
      a0 = _mm256_sub_epi32(_mm256_add_epi32(a0, a0), m0);
      a1 = _mm256_sub_epi32(_mm256_add_epi32(a1, a1), m1);
      a2 = _mm256_sub_epi32(_mm256_add_epi32(a2, a2), m2);
      a3 = _mm256_sub_epi32(_mm256_add_epi32(a3, a3), m3);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), a0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j + 8), a1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j + 16), a2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j + 24), a3);
  }
  for (; j + 8 <= n; j += 8) {
    __m256i a0 = _mm256_setzero_si256();
    const float* p = z + j;
    for (std::int64_t d = 0; d < D; ++d, p += s_d) {
      const __m256i m0 = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(p), zero, _CMP_GT_OQ));
      a0 = _mm256_sub_epi32(_mm256_add_epi32(a0, a0), m0);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), a0);
  }
#endif
  if (j < n) {  // the tail (everything without AVX2): one pass per channel, vectorised by gcc
    const std::int64_t rest = n - j;
    std::int32_t* __restrict dst = out + j;
    for (std::int64_t k = 0; k < rest; ++k) dst[k] = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      const float* __restrict src = z + d * s_d + j;
      for (std::int64_t k = 0; k < rest; ++k) dst[k] = 2 * dst[k] + static_cast<std::int32_t>(src[k] > 0.0f);
    }
  }
}

}  // namespace

void lfq_encode_strided(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                        std::int64_t s_d, std::int64_t s_i, std::int32_t* __restrict out, std::int64_t* __restrict out64) {
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
        if (out64 != nullptr) {
          out64[r0 + r] = acc;
        } else {
          out[r0 + r] = acc;
        }
      }
    }
    return;
  }
  if (s_i == 1) {
    // Positions contiguous, e.g. the spectrum codec's channel-first (B, D, T) read in place.
    const std::int64_t tiles_per_outer = (I + kEncodeTile - 1) / kEncodeTile;
    const std::int64_t n_tiles = O * tiles_per_outer;
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t k = 0; k < n_tiles; ++k) {
      const std::int64_t o = k / tiles_per_outer;
      const std::int64_t i0 = (k % tiles_per_outer) * kEncodeTile;
      const std::int64_t n = min64(kEncodeTile, I - i0);
      alignas(64) std::int32_t tile[kEncodeTile];
      encode_positions(z + o * s_o + i0, D, s_d, n, out64 != nullptr ? tile : out + o * I + i0);
      if (out64 != nullptr) {
        std::int64_t* __restrict wide = out64 + o * I + i0;
        for (std::int64_t j = 0; j < n; ++j) wide[j] = tile[j];  // vectorised
      }
    }
    return;
  }
  // Any other layout: tiles of positions, one pass per channel OR-ing its bit into the tile's indices.
  const std::int64_t tiles_per_outer = (I + kScratch - 1) / kScratch;
  const std::int64_t n_tiles = O * tiles_per_outer;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t k = 0; k < n_tiles; ++k) {
    const std::int64_t o = k / tiles_per_outer;
    const std::int64_t i0 = (k % tiles_per_outer) * kScratch;
    const std::int64_t n = min64(kScratch, I - i0);
    alignas(64) std::int32_t tile[kScratch];
    std::int32_t* __restrict dst = out64 != nullptr ? tile : out + o * I + i0;
    for (std::int64_t j = 0; j < n; ++j) dst[j] = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      const float* __restrict src = z + o * s_o + d * s_d + i0 * s_i;
      const std::int32_t w = std::int32_t{1} << (D - 1 - d);
      for (std::int64_t j = 0; j < n; ++j) dst[j] |= w & -static_cast<std::int32_t>(src[j * s_i] > 0.0f);
    }
    if (out64 != nullptr) {
      std::int64_t* __restrict wide = out64 + o * I + i0;
      for (std::int64_t j = 0; j < n; ++j) wide[j] = tile[j];  // vectorised
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
