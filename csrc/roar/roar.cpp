// ROAR entry points of aion_fast._C: argument checks (baseline code), then the kernels of roar_cpu.cpp / roar.cu.
#include <pybind11/pytypes.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "aion_fast/checks.h"
#include "aion_fast/ops.h"
#include "roar_kernels.h"
#include "roar_math.h"

namespace aion_fast {
namespace {

// dtype T (TypeError), rank ndim, C-contiguous (ValueError); the names of checks.h's messages.
template <typename T>
void check_array(const py::array& a, const char* name, py::ssize_t ndim, const char* dtype) {
  if (!py::isinstance<py::array_t<T>>(a)) {
    throw py::type_error(std::string(name) + ": expected dtype " + dtype + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  check_ndim(a, name, ndim);
  check_contiguous(a, name);
}

}  // namespace

std::int64_t roar_step(const py::array& logits, const py::array& positions, py::array& tokens, py::array& input_mask,
                       py::array& target_mask, const py::array& object_ids, const py::array& sample_ids,
                       py::array& next_positions, std::uint64_t seed, std::int64_t step, std::int64_t next_step,
                       double temperature, std::int64_t top_k, double top_p) {
  check_array<float>(logits, "logits", 3, "float32");  // (R, N, V)
  const py::ssize_t R = logits.shape(0), N = logits.shape(1), V = logits.shape(2);
  check_array<std::int64_t>(positions, "positions", 2, "int64");  // (R, N)
  AION_CHECK_DIM(positions, 0, R);
  AION_CHECK_DIM(positions, 1, N);
  check_array<std::int64_t>(tokens, "tokens", 2, "int64");  // (R, L)
  AION_CHECK_DIM(tokens, 0, R);
  const py::ssize_t L = tokens.shape(1);
  check_array<bool>(input_mask, "input_mask", 2, "bool");  // (R, L)
  AION_CHECK_DIM(input_mask, 0, R);
  AION_CHECK_DIM(input_mask, 1, L);
  check_array<bool>(target_mask, "target_mask", 2, "bool");  // (R, L)
  AION_CHECK_DIM(target_mask, 0, R);
  AION_CHECK_DIM(target_mask, 1, L);
  check_array<std::int64_t>(object_ids, "object_ids", 1, "int64");  // (R,)
  AION_CHECK_DIM(object_ids, 0, R);
  check_array<std::int64_t>(sample_ids, "sample_ids", 1, "int64");  // (R,)
  AION_CHECK_DIM(sample_ids, 0, R);
  check_array<std::int64_t>(next_positions, "next_positions", 2, "int64");  // (R, next_count)
  AION_CHECK_DIM(next_positions, 0, R);
  const py::ssize_t next_count = next_positions.shape(1);
  AION_CHECK_OUTPUT(tokens);
  AION_CHECK_OUTPUT(input_mask);
  AION_CHECK_OUTPUT(target_mask);
  AION_CHECK_OUTPUT(next_positions);
  AION_CHECK(V >= 1 && V < (py::ssize_t{1} << 31), logits, "the vocabulary size V must lie in [1, 2^31)");
  AION_CHECK(L >= 1 && L <= roar::kMaxPositions, tokens, "the number of positions L must lie in [1, 65536]");
  AION_CHECK(step >= 0 && step < roar::kMaxSteps && next_step >= 0 && next_step < roar::kMaxSteps, step,
             "step and next_step must lie in [0, 65536)");
  AION_CHECK(temperature >= 0.0, temperature, "must be >= 0 (0 = greedy)");
  AION_CHECK(top_k >= 0, top_k, "must be >= 0 (0 = off)");
  AION_CHECK(top_p >= 0.0 && top_p <= 1.0, top_p, "must lie in [0, 1] (0 = off)");

  const auto* pos = static_cast<const std::int64_t*>(positions.data());
  const auto* done = static_cast<const std::uint8_t*>(target_mask.data());
  std::vector<std::uint8_t> seen(static_cast<size_t>(L));
  for (py::ssize_t r = 0; r < R; ++r) {
    std::fill(seen.begin(), seen.end(), 0);
    py::ssize_t unknown = 0;
    for (py::ssize_t p = 0; p < L; ++p) unknown += done[r * L + p] == 0;
    for (py::ssize_t n = 0; n < N; ++n) {
      const std::int64_t p = pos[r * N + n];
      AION_CHECK(p >= 0 && p < L, positions, "every position must lie in [0, L)");
      AION_CHECK(!done[r * L + p] && !seen[p], positions,
                 "positions must be distinct and still unknown (target_mask False) in their row");
      seen[p] = 1;
    }
    AION_CHECK(unknown - N >= next_count, next_positions,
               "next_count exceeds the number of positions still unknown after this step in row " + std::to_string(r));
  }

  RoarStepArgs args{static_cast<const float*>(logits.data()),
                    pos,
                    static_cast<std::int64_t*>(tokens.mutable_data()),
                    static_cast<std::uint8_t*>(input_mask.mutable_data()),
                    static_cast<std::uint8_t*>(target_mask.mutable_data()),
                    static_cast<const std::int64_t*>(object_ids.data()),
                    static_cast<const std::int64_t*>(sample_ids.data()),
                    static_cast<std::int64_t*>(next_positions.mutable_data()),
                    R,
                    N,
                    V,
                    L,
                    seed,
                    step,
                    next_step,
                    next_count,
                    temperature,
                    top_k,
                    top_p};
  const std::int64_t slots = cpu::roar_scratch_slots();
  std::vector<double> scratch_f64(static_cast<size_t>(slots * 2 * V));
  std::vector<std::int64_t> scratch_i64(static_cast<size_t>(slots * L));
  std::vector<std::int32_t> scratch_i32(static_cast<size_t>(slots * (V > L ? V : L)));
  py::gil_scoped_release release;
  return cpu::roar_step(args, scratch_f64.data(), scratch_i64.data(), scratch_i32.data());
}

py::tuple philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3, std::uint32_t k0,
                        std::uint32_t k1) {
  const roar::Block b = roar::philox4x32_10(c0, c1, c2, c3, k0, k1);
  return py::make_tuple(b.w[0], b.w[1], b.w[2], b.w[3]);
}

bool roar_has_cuda() {
#ifdef AION_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::int64_t roar_step_cuda(std::uintptr_t logits, std::uintptr_t positions, std::uintptr_t tokens,
                            std::uintptr_t input_mask, std::uintptr_t target_mask, std::uintptr_t object_ids,
                            std::uintptr_t sample_ids, std::uintptr_t next_positions, std::uintptr_t bad_count,
                            std::int64_t R, std::int64_t N, std::int64_t V, std::int64_t L, std::int64_t next_count,
                            std::uint64_t seed, std::int64_t step, std::int64_t next_step, double temperature,
                            std::int64_t top_k, double top_p, std::uintptr_t scratch, std::int64_t scratch_bytes,
                            std::int64_t sample_chunk, std::int64_t row_chunk, std::uintptr_t stream) {
#ifdef AION_FAST_WITH_CUDA
  AION_CHECK(V >= 1 && L >= 1 && L <= roar::kMaxPositions, L, "need V >= 1 and 1 <= L <= 65536");
  AION_CHECK(step >= 0 && step < roar::kMaxSteps && next_step >= 0 && next_step < roar::kMaxSteps, step,
             "step and next_step must lie in [0, 65536)");
  AION_CHECK(scratch % 8 == 0 && sample_chunk >= 1 && row_chunk >= 1 && sample_chunk * 20 * V <= scratch_bytes &&
                 row_chunk * 12 * L <= scratch_bytes,
             scratch, "need 8-byte alignment and scratch_bytes >= max(sample_chunk * 20 * V, row_chunk * 12 * L)");
  const RoarScratch work{reinterpret_cast<void*>(scratch), scratch_bytes, sample_chunk, row_chunk};
  RoarStepArgs args{reinterpret_cast<const float*>(logits),
                    reinterpret_cast<const std::int64_t*>(positions),
                    reinterpret_cast<std::int64_t*>(tokens),
                    reinterpret_cast<std::uint8_t*>(input_mask),
                    reinterpret_cast<std::uint8_t*>(target_mask),
                    reinterpret_cast<const std::int64_t*>(object_ids),
                    reinterpret_cast<const std::int64_t*>(sample_ids),
                    reinterpret_cast<std::int64_t*>(next_positions),
                    R,
                    N,
                    V,
                    L,
                    seed,
                    step,
                    next_step,
                    next_count,
                    temperature,
                    top_k,
                    top_p};
  py::gil_scoped_release release;
  cuda::roar_step(args, work, reinterpret_cast<void*>(stream), reinterpret_cast<std::int64_t*>(bad_count));
  return 0;
#else
  (void)logits, (void)positions, (void)tokens, (void)input_mask, (void)target_mask, (void)object_ids;
  (void)sample_ids, (void)next_positions, (void)bad_count, (void)R, (void)N, (void)V, (void)L, (void)next_count;
  (void)seed, (void)step, (void)next_step, (void)temperature, (void)top_k, (void)top_p, (void)stream;
  (void)scratch, (void)scratch_bytes, (void)sample_chunk, (void)row_chunk;
  throw py::value_error("roar_step_cuda: aion_fast._C was built without CUDA");
#endif
}

}  // namespace aion_fast
