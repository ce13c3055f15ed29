// ROAR sampling step on the CPU: OpenMP over rows, each row sampled and updated by one thread with the shared
// maths of roar_math.h (Philox4x32-10 blocks keyed by seed, step, chain and position; temperature, top-k and
// top-p filtering; inverse-CDF sampling), then the reveal permutation of the next step drawn for that row.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#include "roar_kernels.h"
#include "roar_math.h"

#ifdef AION_FAST_WITH_OPENMP
#include <omp.h>
#endif

namespace aion_fast {
namespace cpu {

std::int64_t roar_scratch_slots() {
#ifdef AION_FAST_WITH_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::int64_t roar_step(const RoarStepArgs& a, double* scratch_f64, std::int64_t* scratch_i64,
                       std::int32_t* scratch_i32) {
  const std::int64_t slots = roar_scratch_slots();
  const std::int64_t idx_len = a.V > a.L ? a.V : a.L;
  std::int64_t bad = 0;

#pragma omp parallel for schedule(dynamic, 1) if (a.R > 1 && a.R * (a.N * a.V + a.L) >= 4096) reduction(+ : bad)
  for (std::int64_t r = 0; r < a.R; ++r) {
#ifdef AION_FAST_WITH_OPENMP
    std::int64_t slot = omp_get_thread_num();
    if (slot >= slots) slot = slot % slots;
#else
    const std::int64_t slot = 0;
#endif
    double* z = scratch_f64 + slot * 2 * a.V;
    double* w = z + a.V;
    std::int64_t* keys = scratch_i64 + slot * a.L;
    std::int32_t* idx = scratch_i32 + slot * idx_len;
    std::int64_t* tokens = a.tokens + r * a.L;
    std::uint8_t* input_mask = a.input_mask + r * a.L;
    std::uint8_t* target_mask = a.target_mask + r * a.L;
    const std::int64_t object = a.object_ids[r], sample = a.sample_ids[r];

    for (std::int64_t n = 0; n < a.N; ++n) {
      const std::int64_t pos = a.positions[r * a.N + n];
      const double u = roar::uniform53(roar::chain_block(a.seed, a.step, object, sample, pos));
      const std::int64_t token =
          roar::sample_token(a.logits + (r * a.N + n) * a.V, a.V, a.temperature, a.top_k, a.top_p, u, z, w, idx);
      if (token < 0) {
        ++bad;
        continue;
      }
      tokens[pos] = token;
      input_mask[pos] = 0;
      target_mask[pos] = 1;
    }
    if (a.next_count > 0) {
      const std::int64_t unknown = roar::select_positions(target_mask, a.L, a.seed, a.next_step, object, sample,
                                                          a.next_count, a.next_positions + r * a.next_count, keys, idx);
      if (unknown < a.next_count) ++bad;
    }
  }
  return bad;
}

}  // namespace cpu
}  // namespace aion_fast
