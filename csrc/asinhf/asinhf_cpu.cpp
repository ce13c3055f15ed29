// Vectorised float32 arcsinh that reproduces glibc 2.36's asinhf bit for bit (contract: asinhf_glibc.h).
//
// Algorithm credit: glibc's asinhf is Sun Microsystems' fdlibm s_asinhf.c (1993); its log1pf is fdlibm's
// s_log1pf.c; its logf is the ARM optimized-routines logf (Szabolcs Nagy, 2017, in glibc since 2.27: 16-entry
// table of 1/c and log(c) in double, degree-3 polynomial), which x86-64 glibc runs as the FMA-compiled variant
// __logf_fma on CPUs with FMA. This file is an independent AVX2 re-implementation of those algorithms (constants
// from glibc 2.36's sysdeps/ieee754/flt-32/{s_asinhf,s_log1pf,e_logf_data}.c); every float32 operation happens in
// the same order with the same rounding as the compiled glibc code, including where gcc contracted logf's double
// expressions into fused multiply-adds (read off the disassembly of Debian's libm.so.6 2.36: asinhf and log1pf are
// plain SSE float code, logf goes through the ifunc to __logf_fma) and, decisively, by the exhaustive comparison of
// tests/ops/test_asinhf_vector.py over all 2^32 inputs. (Side fact: replacing the FMAs by a multiply and an add, as
// the SSE2 variant does, also matched on all 2^31 non-negative inputs; logf's double arithmetic leaves enough slack.)
// With x = sign * a, ix = bits(a):
//
//   ix <  0x38000000 (a < 2^-15)        asinhf(x) = x   (glibc's comment says 2^-14; the constant is 2^-15)
//   ix >= 0x7f800000 (inf, NaN)         x + x
//   ix >  0x47000000 (a > 2^15)         sign * (logf(a) + ln2)
//   ix >  0x40000000 (a > 2)            sign * logf(2a + 1 / (sqrtf(a*a + 1) + a))
//   otherwise                           sign * log1pf(a + a*a / (1 + sqrtf(1 + a*a)))
//
// Each 8-lane vector whose lanes all take one arithmetic branch runs that branch; the lanes of mixed vectors are
// packed into one buffer per branch first (vector_chunk), so no element pays for both branches (sky-noise images mix
// log1pf and logf lanes in most vectors). Because another libm (glibc >= 2.41's CORE-MATH asinhf, musl, a patched
// glibc) may differ, asinhf_array uses this replica only after verifying it against the loaded libm (verify_vector).
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cstddef>
#include <cstdint>

#include "aion_fast/asinhf_glibc.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define AION_ASINHF_VECTOR 1
#else
#define AION_ASINHF_VECTOR 0
#endif

namespace aion_fast {
namespace cpu {
namespace {

#if AION_ASINHF_VECTOR

// ---- logf (ARM optimized-routines algorithm, glibc e_logf.c / e_logf_data.c constants) ------------------------------
// x = 2^k z with z in [0x3f330000, 2 * 0x3f330000) as a float; c_i is near the centre of z's 1/16 subinterval;
// log(x) = log1p(z / c_i - 1) + log(c_i) + k ln2 with log1p(r) ~ r + A2 r^2 + A1 r^3 + A0 r^4.
constexpr double kLogfInvC[16] = {
    0x1.661ec79f8f3bep+0, 0x1.571ed4aaf883dp+0, 0x1.49539f0f010bp+0,  0x1.3c995b0b80385p+0,
    0x1.30d190c8864a5p+0, 0x1.25e227b0b8eap+0,  0x1.1bb4a4a1a343fp+0, 0x1.12358f08ae5bap+0,
    0x1.0953f419900a7p+0, 0x1p+0,               0x1.e608cfd9a47acp-1, 0x1.ca4b31f026aap-1,
    0x1.b2036576afce6p-1, 0x1.9c2d163a1aa2dp-1, 0x1.886e6037841edp-1, 0x1.767dcf5534862p-1,
};
constexpr double kLogfLogC[16] = {
    -0x1.57bf7808caadep-2, -0x1.2bef0a7c06ddbp-2, -0x1.01eae7f513a67p-2, -0x1.b31d8a68224e9p-3,
    -0x1.6574f0ac07758p-3, -0x1.1aa2bc79c81p-3,   -0x1.a4e76ce8c0e5ep-4, -0x1.1973c5a611cccp-4,
    -0x1.252f438e10c1ep-5, 0x0p+0,                0x1.aa5aa5df25984p-5,  0x1.c5e53aa362eb4p-4,
    0x1.526e57720db08p-3,  0x1.bc2860d22477p-3,   0x1.1058bc8a07ee1p-2,  0x1.4043057b6ee09p-2,
};
constexpr double kLogfLn2 = 0x1.62e42fefa39efp-1;
constexpr double kLogfA0 = -0x1.00ea348b88334p-2;
constexpr double kLogfA1 = 0x1.5575b0be00b6ap-2;
constexpr double kLogfA2 = -0x1.ffffef20a4123p-2;
constexpr int kLogfOff = 0x3f330000;

// The two tables as 32-bit words for vpermd lookups (8 entries per register; cheaper than 4 gathers per 8 lanes):
// words[t][h][e] = word of entry 8h + e, t = 0/1: high/low word of 1/c, t = 2/3: high/low word of log(c).
// Built at compile time (no static initialiser may run AVX2 code before the CPU check, see cpu_kernels.h).
struct LogfWords {
  std::int32_t words[4][2][8];
};
constexpr LogfWords make_logf_words() {
  LogfWords w{};
  for (int e = 0; e < 16; ++e) {
    const auto invc = __builtin_bit_cast(std::uint64_t, kLogfInvC[e]);
    const auto logc = __builtin_bit_cast(std::uint64_t, kLogfLogC[e]);
    w.words[0][e / 8][e % 8] = static_cast<std::int32_t>(invc >> 32);
    w.words[1][e / 8][e % 8] = static_cast<std::int32_t>(invc & 0xffffffffu);
    w.words[2][e / 8][e % 8] = static_cast<std::int32_t>(logc >> 32);
    w.words[3][e / 8][e % 8] = static_cast<std::int32_t>(logc & 0xffffffffu);
  }
  return w;
}
alignas(32) constexpr LogfWords kLogfWords = make_logf_words();

// Word `index` (0..15) of a 16-word table; upper: index > 7.
inline __m256i lookup16(const std::int32_t (&halves)[2][8], __m256i index, __m256i upper) {
  const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(halves[0])), index);
  const __m256i hi = _mm256_permutevar8x32_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(halves[1])), index);
  return _mm256_blendv_epi8(lo, hi, upper);
}

// 8 table doubles, as lanes 0-3 and 4-7, from their high and low words.
inline void join_words(__m256i high, __m256i low, __m256d* first, __m256d* second) {
  const __m256i a = _mm256_unpacklo_epi32(low, high);  // d0 d1 | d4 d5
  const __m256i b = _mm256_unpackhi_epi32(low, high);  // d2 d3 | d6 d7
  *first = _mm256_castsi256_pd(_mm256_permute2x128_si256(a, b, 0x20));
  *second = _mm256_castsi256_pd(_mm256_permute2x128_si256(a, b, 0x31));
}

// logf of 4 lanes (as doubles until the final rounding): FMA where gcc contracted glibc's C expressions.
inline __m128 logf_half(__m128 z, __m256d invc, __m256d logc, __m128i exponent) {
  const __m256d zd = _mm256_cvtps_pd(z);
  const __m256d kd = _mm256_cvtepi32_pd(exponent);
  const __m256d r = _mm256_fmadd_pd(zd, invc, _mm256_set1_pd(-1.0));                // z * invc - 1
  const __m256d y0 = _mm256_fmadd_pd(kd, _mm256_set1_pd(kLogfLn2), logc);           // logc + k * Ln2
  const __m256d r2 = _mm256_mul_pd(r, r);                                            // r * r
  __m256d y = _mm256_fmadd_pd(_mm256_set1_pd(kLogfA1), r, _mm256_set1_pd(kLogfA2));  // A1 * r + A2
  y = _mm256_fmadd_pd(_mm256_set1_pd(kLogfA0), r2, y);                               // A0 * r2 + y
  y = _mm256_fmadd_pd(y, r2, _mm256_add_pd(y0, r));                                  // y * r2 + (y0 + r)
  return _mm256_cvtpd_ps(y);
}

// logf of 8 positive, normal, finite lanes (other lanes: garbage, never a fault).
inline __m256 logf8(__m256 x) {
  const __m256i ix = _mm256_castps_si256(x);
  const __m256i tmp = _mm256_sub_epi32(ix, _mm256_set1_epi32(kLogfOff));
  const __m256i index = _mm256_and_si256(_mm256_srli_epi32(tmp, 23 - 4), _mm256_set1_epi32(15));
  const __m256i upper = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(7));
  const __m256i k = _mm256_srai_epi32(tmp, 23);
  const __m256i iz = _mm256_sub_epi32(ix, _mm256_and_si256(tmp, _mm256_set1_epi32(static_cast<int>(0xff800000u))));
  const __m256 z = _mm256_castsi256_ps(iz);
  __m256d invc_lo, invc_hi, logc_lo, logc_hi;
  join_words(lookup16(kLogfWords.words[0], index, upper), lookup16(kLogfWords.words[1], index, upper), &invc_lo,
             &invc_hi);
  join_words(lookup16(kLogfWords.words[2], index, upper), lookup16(kLogfWords.words[3], index, upper), &logc_lo,
             &logc_hi);
  const __m128 lo = logf_half(_mm256_castps256_ps128(z), invc_lo, logc_lo, _mm256_castsi256_si128(k));
  const __m128 hi = logf_half(_mm256_extractf128_ps(z, 1), invc_hi, logc_hi, _mm256_extracti128_si256(k, 1));
  return _mm256_set_m128(hi, lo);
}

// ---- log1pf (fdlibm s_log1pf.c) for the arguments asinhf passes: 2^-15 <= x < 4, finite -----------------------------
inline __m256 fsel(__m256 mask, __m256 if_true, __m256 if_false) { return _mm256_blendv_ps(if_false, if_true, mask); }
inline __m256i isel(__m256i mask, __m256i if_true, __m256i if_false) {
  return _mm256_blendv_epi8(if_false, if_true, mask);
}
inline __m256 fset(std::uint32_t bits) { return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(bits))); }

// The polynomial R(s^2) of log1p(f) = 2s + s R with s = f / (2 + f), Horner from Lp7 as the compiled code does.
inline __m256 log1pf_poly(__m256 z) {
  __m256 R = _mm256_mul_ps(fset(0x3e178897u), z);             // Lp7
  R = _mm256_mul_ps(_mm256_add_ps(R, fset(0x3e1cd04fu)), z);  // Lp6
  R = _mm256_mul_ps(_mm256_add_ps(R, fset(0x3e3a3325u)), z);  // Lp5
  R = _mm256_mul_ps(_mm256_add_ps(R, fset(0x3e638e29u)), z);  // Lp4
  R = _mm256_mul_ps(_mm256_add_ps(R, fset(0x3e924925u)), z);  // Lp3
  R = _mm256_mul_ps(_mm256_add_ps(R, fset(0x3ecccccdu)), z);  // Lp2
  return _mm256_mul_ps(_mm256_add_ps(R, fset(0x3f2aaaabu)), z);  // Lp1
}

inline __m256 log1pf8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256i hx = _mm256_castps_si256(x);
  // hx < 0x3ed413d7 (x < 0.41422): k = 0, f = x (the |x| < 2^-29 and x <= -1 cases cannot occur here).
  const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3ed413d7), hx);
  if (_mm256_movemask_ps(_mm256_castsi256_ps(small)) == 0xff) {  // all lanes: f - (hfsq - s (hfsq + R))
    const __m256 hfsq = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), x);
    const __m256 s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(2.0f), x));
    const __m256 p = _mm256_mul_ps(s, _mm256_add_ps(hfsq, log1pf_poly(_mm256_mul_ps(s, s))));
    return _mm256_sub_ps(x, _mm256_sub_ps(hfsq, p));
  }
  // Otherwise u = 1 + x = 2^k (1 + f) with a correction c for the rounding of 1 + x.
  const __m256 u = _mm256_add_ps(one, x);
  const __m256i hu_all = _mm256_castps_si256(u);
  const __m256i k_u = _mm256_sub_epi32(_mm256_srai_epi32(hu_all, 23), _mm256_set1_epi32(127));
  const __m256 c_pos = _mm256_sub_ps(one, _mm256_sub_ps(u, x));  // k > 0: 1 - (u - x)
  const __m256 c_zero = _mm256_sub_ps(x, _mm256_sub_ps(u, one));  // k = 0: x - (u - 1)
  const __m256i k_positive = _mm256_cmpgt_epi32(k_u, _mm256_setzero_si256());
  const __m256 c = _mm256_div_ps(fsel(_mm256_castsi256_ps(k_positive), c_pos, c_zero), u);
  const __m256i mantissa = _mm256_and_si256(hu_all, _mm256_set1_epi32(0x007fffff));
  // mantissa >= 0x3504f7 (1 + f >= sqrt(2)): normalise u / 2 instead, k + 1.
  const __m256i upper = _mm256_cmpgt_epi32(mantissa, _mm256_set1_epi32(0x3504f6));
  const __m256i u_norm = isel(upper, _mm256_or_si256(mantissa, _mm256_set1_epi32(0x3f000000)),
                              _mm256_or_si256(mantissa, _mm256_set1_epi32(0x3f800000)));
  const __m256i k_norm = _mm256_sub_epi32(k_u, upper);  // upper is -1 where true
  const __m256i hu_norm =
      isel(upper, _mm256_srli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(0x00800000), mantissa), 2), mantissa);
  const __m256 f_norm = _mm256_sub_ps(_mm256_castsi256_ps(u_norm), one);

  const __m256 f = fsel(_mm256_castsi256_ps(small), x, f_norm);
  const __m256i k = _mm256_andnot_si256(small, k_norm);
  const __m256i hu = isel(small, _mm256_set1_epi32(1), hu_norm);
  const __m256 kf = _mm256_cvtepi32_ps(k);
  const __m256 k_is_zero = _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_setzero_si256()));
  const __m256 ln2_hi = fset(0x3f317180u), ln2_lo = fset(0x3717f7d1u);

  const __m256 hfsq = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), f), f);  // 0.5f * f * f
  const __m256 s = _mm256_div_ps(f, _mm256_add_ps(_mm256_set1_ps(2.0f), f));
  const __m256 z = _mm256_mul_ps(s, s);
  const __m256 R = log1pf_poly(z);
  const __m256 p = _mm256_mul_ps(s, _mm256_add_ps(hfsq, R));  // s * (hfsq + R)
  const __m256 k_lo_c = _mm256_add_ps(_mm256_mul_ps(kf, ln2_lo), c);  // k * ln2_lo + c
  const __m256 k_hi = _mm256_mul_ps(kf, ln2_hi);
  const __m256 r_k0 = _mm256_sub_ps(f, _mm256_sub_ps(hfsq, p));
  const __m256 r_k = _mm256_sub_ps(k_hi, _mm256_sub_ps(_mm256_sub_ps(hfsq, _mm256_add_ps(p, k_lo_c)), f));
  __m256 result = fsel(k_is_zero, r_k0, r_k);

  // hu == 0 (|f| < 2^-20, or 1 + f a power of two): the short series. Rare (u just below a power of two).
  const __m256i hu_zero = _mm256_cmpeq_epi32(hu, _mm256_setzero_si256());
  if (!_mm256_testz_si256(hu_zero, hu_zero)) {
    const __m256 f_zero = _mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_EQ_OQ);
    const __m256 exact = fsel(k_is_zero, _mm256_setzero_ps(), _mm256_add_ps(k_lo_c, k_hi));
    const __m256 r2 = _mm256_mul_ps(hfsq, _mm256_sub_ps(one, _mm256_mul_ps(fset(0x3f2aaaabu), f)));
    const __m256 short_k0 = _mm256_sub_ps(f, r2);
    const __m256 short_k = _mm256_sub_ps(k_hi, _mm256_sub_ps(_mm256_sub_ps(r2, k_lo_c), f));
    const __m256 series = fsel(f_zero, exact, fsel(k_is_zero, short_k0, short_k));
    result = fsel(_mm256_castsi256_ps(hu_zero), series, result);
  }
  return result;
}

// ---- asinhf (fdlibm s_asinhf.c) ------------------------------------------------------------------------------------
// The two arithmetic branches, each on 8 lanes of x that all take it (the sign is restored at the end).

// 2^-15 <= |x| <= 2: copysignf(log1pf(a + a*a / (1 + sqrtf(1 + a*a))), x), a = |x|.
inline __m256 log1p_branch(__m256 x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_andnot_ps(sign_bit, x);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_mul_ps(a, a);
  const __m256 arg = _mm256_add_ps(a, _mm256_div_ps(t, _mm256_add_ps(one, _mm256_sqrt_ps(_mm256_add_ps(one, t)))));
  return _mm256_or_ps(log1pf8(arg), _mm256_and_ps(sign_bit, x));  // log1pf(arg) >= 0: or-ing the sign = copysignf
}

// 2 < |x| < inf: |x| > 2^15: logf(a) + ln2; otherwise logf(2a + 1 / (sqrtf(a*a + 1) + a)); sign of x.
inline __m256 logf_branch(__m256 x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_andnot_ps(sign_bit, x);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 big = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_castps_si256(a), _mm256_set1_epi32(0x47000000)));
  const __m256 root = _mm256_add_ps(_mm256_sqrt_ps(_mm256_add_ps(_mm256_mul_ps(a, a), one)), a);
  const __m256 mid_arg = _mm256_add_ps(_mm256_add_ps(a, a), _mm256_div_ps(one, root));
  const __m256 log_value = logf8(fsel(big, a, mid_arg));
  const __m256 w = fsel(big, _mm256_add_ps(log_value, fset(0x3f317218u)), log_value);
  return _mm256_or_ps(w, _mm256_and_ps(sign_bit, x));
}

// Lane tables for the 8-bit lane masks m (one byte per lane, read with vpmovzxbd):
//   compact[m]: the positions of the set bits of m in order (then 0), to pack the selected lanes to the front;
//   expand[m]:  for each lane j, the rank of j among the set bits of m, to unpack them back into place.
struct LaneTables {
  std::uint64_t compact[256];
  std::uint64_t expand[256];
};
constexpr LaneTables make_lane_tables() {
  LaneTables t{};
  for (int mask = 0; mask < 256; ++mask) {
    std::uint64_t packed = 0, ranks = 0;
    int count = 0;
    for (int lane = 0; lane < 8; ++lane) {
      ranks |= static_cast<std::uint64_t>(count) << (8 * lane);
      if (mask & (1 << lane)) packed |= static_cast<std::uint64_t>(lane) << (8 * count++);
    }
    t.compact[mask] = packed;
    t.expand[mask] = ranks;
  }
  return t;
}
alignas(64) constexpr LaneTables kLanes = make_lane_tables();

inline __m256i lane_order(std::uint64_t bytes) {
  return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(bytes)));
}

constexpr int kChunk = 512;  // elements classified per pass (stack buffers of ~4.2 KB)

// out[k] = asinhf(in[k]) for k < n <= kChunk. Pass 1 classifies 8 lanes at a time, writes the result of the lanes
// that need no arithmetic (|x| < 2^-15: x; inf/NaN: x + x) and packs the others into one buffer per arithmetic
// branch, so that each element goes through one branch only (a vector of mixed lanes would pay for both). Pass 2
// runs each branch over its buffer; pass 3 unpacks the results into place with the lane masks of pass 1.
void vector_chunk(const float* in, float* out, int n) {
  alignas(32) float log1p_values[kChunk + 16];
  alignas(32) float logf_values[kChunk + 16];
  std::uint8_t log1p_masks[kChunk / 8], logf_masks[kChunk / 8];
  alignas(32) float tail_in[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 0: no arithmetic branch
  alignas(32) float tail_out[8];
  const int full = n & ~7, blocks = (n + 7) / 8;
  if (full < n) memcpy(tail_in, in + full, static_cast<std::size_t>(n - full) * sizeof(float));
  float* const out_block_tail = full < n ? tail_out : nullptr;
  int n_log1p = 0, n_logf = 0;
  for (int b = 0; b < blocks; ++b) {
    const __m256 x = 8 * b < full ? _mm256_loadu_ps(in + 8 * b) : _mm256_load_ps(tail_in);
    const __m256i ax = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
    const __m256i above_2 = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x40000000));
    const __m256i finite = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7f800000), ax);
    const __m256i not_tiny = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x37ffffff));
    const int logf_mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_and_si256(above_2, finite)));
    const int log1p_mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_andnot_si256(above_2, not_tiny)));
    float* const target = 8 * b < full ? out + 8 * b : out_block_tail;
    if (log1p_mask == 0xff || logf_mask == 0xff) {  // one branch for all 8 lanes (common): no packing
      _mm256_storeu_ps(target, log1p_mask == 0xff ? log1p_branch(x) : logf_branch(x));
      log1p_masks[b] = logf_masks[b] = 0;
      continue;
    }
    _mm256_storeu_ps(target, fsel(_mm256_castsi256_ps(finite), x, _mm256_add_ps(x, x)));
    log1p_masks[b] = static_cast<std::uint8_t>(log1p_mask);
    logf_masks[b] = static_cast<std::uint8_t>(logf_mask);
    _mm256_storeu_ps(log1p_values + n_log1p, _mm256_permutevar8x32_ps(x, lane_order(kLanes.compact[log1p_mask])));
    _mm256_storeu_ps(logf_values + n_logf, _mm256_permutevar8x32_ps(x, lane_order(kLanes.compact[logf_mask])));
    n_log1p += __builtin_popcount(static_cast<unsigned>(log1p_mask));
    n_logf += __builtin_popcount(static_cast<unsigned>(logf_mask));
  }
  // pad with any value of the branch: pass 2 runs whole pairs of vectors, pass 3 reads up to 8 lanes past the end
  for (int j = n_log1p; j < ((n_log1p + 15) & ~15) + 8; ++j) log1p_values[j] = 1.0f;
  for (int j = 0; j < n_log1p; j += 16) {
    const __m256 r0 = log1p_branch(_mm256_load_ps(log1p_values + j));
    const __m256 r1 = log1p_branch(_mm256_load_ps(log1p_values + j + 8));
    _mm256_store_ps(log1p_values + j, r0);
    _mm256_store_ps(log1p_values + j + 8, r1);
  }
  for (int j = n_logf; j < ((n_logf + 15) & ~15) + 8; ++j) logf_values[j] = 4.0f;
  for (int j = 0; j < n_logf; j += 16) {
    const __m256 r0 = logf_branch(_mm256_load_ps(logf_values + j));
    const __m256 r1 = logf_branch(_mm256_load_ps(logf_values + j + 8));
    _mm256_store_ps(logf_values + j, r0);
    _mm256_store_ps(logf_values + j + 8, r1);
  }
  int at_log1p = 0, at_logf = 0;
  for (int b = 0; b < blocks; ++b) {
    const int m1 = log1p_masks[b], m2 = logf_masks[b];
    if ((m1 | m2) == 0) continue;
    float* const target = 8 * b < full ? out + 8 * b : out_block_tail;
    const __m256 r1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(log1p_values + at_log1p), lane_order(kLanes.expand[m1]));
    const __m256 r2 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(logf_values + at_logf), lane_order(kLanes.expand[m2]));
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256 in1 = _mm256_castsi256_ps(
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m1), lane_bit), lane_bit));
    const __m256 in2 = _mm256_castsi256_ps(
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m2), lane_bit), lane_bit));
    _mm256_storeu_ps(target, fsel(in2, r2, fsel(in1, r1, _mm256_loadu_ps(target))));
    at_log1p += __builtin_popcount(static_cast<unsigned>(m1));
    at_logf += __builtin_popcount(static_cast<unsigned>(m2));
  }
  if (full < n) memcpy(out + full, tail_out, static_cast<std::size_t>(n - full) * sizeof(float));
}

void vector_array(const float* in, float* out, std::int64_t n) {
  for (std::int64_t start = 0; start < n; start += kChunk) {
    const std::int64_t rest = n - start;
    vector_chunk(in + start, out + start, static_cast<int>(rest < kChunk ? rest : kChunk));
  }
}

#endif  // AION_ASINHF_VECTOR

void libm_array(const float* in, float* out, std::int64_t n) {
  for (std::int64_t k = 0; k < n; ++k) out[k] = asinhf(in[k]);
}

// ---- self-check against the loaded libm -----------------------------------------------------------------------------

struct Verdict {
  bool vector;
  const char* reason;
};

inline std::uint32_t to_bits(float v) {
  std::uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  return bits;
}

// Vector replica vs libm on n <= kBlock patterns; returns the number that differ, *first_index the first one.
constexpr std::int64_t kBlock = 1024;

std::int64_t compare_block(const std::uint32_t* bits, std::int64_t n, std::int64_t* first_index) {
  float x[kBlock], expected[kBlock], got[kBlock];
  memcpy(x, bits, static_cast<std::size_t>(n) * sizeof(float));
  libm_array(x, expected, n);
  asinhf_array_vector(x, got, n);
  std::int64_t bad = 0;
  for (std::int64_t k = 0; k < n; ++k) {
    if (to_bits(expected[k]) != to_bits(got[k])) {
      if (bad == 0) *first_index = k;
      ++bad;
    }
  }
  return bad;
}

// Probe set of the one-time self-check: appends patterns to a block and compares each full block.
struct Prober {
  std::uint32_t block[kBlock];
  std::int64_t fill = 0;
  bool ok = true;
  void add(std::uint32_t bits) {
    block[fill++] = bits;
    if (fill == kBlock) flush();
  }
  void flush() {
    std::int64_t first = 0;
    if (fill > 0 && compare_block(block, fill, &first) != 0) ok = false;
    fill = 0;
  }
  // 2 * half_width patterns around `centre`, with both signs.
  void window(std::uint32_t centre, std::uint32_t half_width) {
    for (std::uint32_t d = 0; d < 2 * half_width; ++d) {
      const std::uint32_t bits = (centre & 0x7fffffffu) - half_width + d;
      add(bits);
      add(bits | 0x80000000u);
    }
  }
};

Verdict verify_vector() {
#if !AION_ASINHF_VECTOR
  return Verdict{false, "libm asinhf: this build has no AVX2/FMA vector replica (AION_FAST_ARCH without x86-64-v3)"};
#else
  const char* forced = getenv("AION_FAST_ASINHF_LIBM");
  if (forced != nullptr && forced[0] != '\0' && strcmp(forced, "0") != 0) {
    return Verdict{false, "libm asinhf: forced by AION_FAST_ASINHF_LIBM"};
  }
  Prober p;  // 235,538 probes, once per process
  // 1. a stride over all 2^32 patterns (65537 is odd: every sign, exponent and the mantissa's both ends).
  for (std::uint32_t k = 0; k < 65536u; ++k) p.add(k * 65537u);
  // 2. every branch edge of asinhf (2^-15, 2, 2^15, inf) and of the range (0, FLT_MIN, FLT_MAX), +-256 ulp.
  const std::uint32_t edges[] = {0x38000000u, 0x40000000u, 0x47000000u, 0x7f800000u, 0x00800000u, 0x00000100u};
  for (std::uint32_t e : edges) p.window(e, 256);
  // 3. the inputs where log1pf's argument crosses its own edges: 0.41422, u = 1 + arg at 2, 2 sqrt(2), 4.
  const double log1p_edges[] = {0.41421356, 1.0, 1.8284271, 3.0};
  for (double edge : log1p_edges) p.window(to_bits(static_cast<float>(sinh(log1p(edge)))), 2048);
  // 4. pseudo-random magnitudes in [2^-27, 2^24), both signs (every logf table interval many times).
  std::uint32_t state = 0x9e3779b9u;
  for (int k = 0; k < 131072; ++k) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    const std::uint32_t exponent = 100u + (state >> 8) % 51u;
    p.add((state & 0x80000000u) | (exponent << 23) | (state & 0x007fffffu));
  }
  // 5. specials: +-0, +-inf, NaNs with payloads, subnormals, the largest finite.
  const std::uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                    0x7f800001u, 0xff800001u, 0x7fc12345u, 0xffa54321u, 0x7fffffffu, 0xffffffffu,
                                    0x00000001u, 0x80000001u, 0x007fffffu, 0x807fffffu, 0x7f7fffffu, 0xff7fffffu};
  for (std::uint32_t bits : specials) p.add(bits);
  p.flush();
  if (!p.ok) return Verdict{false, "libm asinhf: the vector replica differs from this libm's asinhf on the self-check"};
  return Verdict{true, "vector replica of glibc 2.36 asinhf (verified against this libm on the self-check)"};
#endif
}

const Verdict& verdict() {
  static const Verdict v = verify_vector();  // thread-safe one-time initialisation
  return v;
}

bool g_force_libm = false;  // test hook, accessed atomically

}  // namespace

void asinhf_array_vector(const float* in, float* out, std::int64_t n) {
#if AION_ASINHF_VECTOR
  vector_array(in, out, n);
#else
  libm_array(in, out, n);
#endif
}

void asinhf_array_libm(const float* in, float* out, std::int64_t n) { libm_array(in, out, n); }

void asinhf_array(const float* in, float* out, std::int64_t n) {
  if (verdict().vector && !__atomic_load_n(&g_force_libm, __ATOMIC_RELAXED)) {
    asinhf_array_vector(in, out, n);
  } else {
    libm_array(in, out, n);
  }
}

bool asinhf_vector_verified(const char** reason) {
  const Verdict& v = verdict();
  if (__atomic_load_n(&g_force_libm, __ATOMIC_RELAXED)) {
    if (reason != nullptr) *reason = "libm asinhf: forced by the test hook asinhf_force_libm";
    return false;
  }
  if (reason != nullptr) *reason = v.reason;
  return v.vector;
}

void asinhf_force_libm(bool force) { __atomic_store_n(&g_force_libm, force, __ATOMIC_RELAXED); }

std::int64_t asinhf_count_mismatches(std::uint32_t first, std::uint32_t stride, std::int64_t count,
                                     std::uint32_t* first_mismatch) {
  const std::int64_t blocks = (count + kBlock - 1) / kBlock;
  std::int64_t total = 0;
  std::int64_t first_k = -1;
#pragma omp parallel for schedule(dynamic, 64) reduction(+ : total)
  for (std::int64_t b = 0; b < blocks; ++b) {
    std::uint32_t bits[kBlock];
    const std::int64_t start = b * kBlock;
    const std::int64_t n = count - start < kBlock ? count - start : kBlock;
    for (std::int64_t k = 0; k < n; ++k) {
      bits[k] = first + static_cast<std::uint32_t>(start + k) * stride;
    }
    std::int64_t first_in_block = 0;
    const std::int64_t bad = compare_block(bits, n, &first_in_block);
    if (bad != 0) {
      total += bad;
#pragma omp critical(aion_asinhf_first_mismatch)
      if (first_k < 0 || start + first_in_block < first_k) first_k = start + first_in_block;
    }
  }
  if (first_k >= 0) *first_mismatch = first + static_cast<std::uint32_t>(first_k) * stride;
  return total;
}

}  // namespace cpu
}  // namespace aion_fast
