// FSQ entry points of aion_fast._C: argument checks (baseline code), then the kernels of fsq_cpu.cpp.
#include <cstdint>
#include <vector>

#include "aion_fast/checks.h"
#include "aion_fast/cpu_kernels.h"
#include "aion_fast/ops.h"

namespace aion_fast {

std::int64_t fsq_encode_from_tanh(const py::array& tanh_z, const py::array& levels, const py::array& half_l,
                                  const py::array& offset, py::array& out) {
  AION_CHECK_ARRAY(tanh_z, float, 2);  // (M, D)
  const py::ssize_t M = tanh_z.shape(0), D = tanh_z.shape(1);
  AION_CHECK(D >= 1 && D <= cpu::kMaxChannels, tanh_z, "the number of channels D must lie in [1, 1024]");
  AION_CHECK_ARRAY(levels, std::int32_t, 1);  // (D,)
  AION_CHECK_DIM(levels, 0, D);
  AION_CHECK_ARRAY(half_l, float, 1);  // (D,)
  AION_CHECK_DIM(half_l, 0, D);
  AION_CHECK_ARRAY(offset, float, 1);  // (D,)
  AION_CHECK_DIM(offset, 0, D);
  AION_CHECK_ARRAY(out, std::int32_t, 1);  // (M,)
  AION_CHECK_DIM(out, 0, M);
  AION_CHECK_OUTPUT(out);

  const auto* lv = static_cast<const std::int32_t*>(levels.data());
  std::vector<float> half_width(static_cast<size_t>(D)), basis(static_cast<size_t>(D));
  std::int64_t running = 1;
  for (py::ssize_t d = 0; d < D; ++d) {
    AION_CHECK(lv[d] >= 2 && lv[d] <= 21, levels, "every level must lie in [2, 21] for the exact C++ path");
    half_width[d] = static_cast<float>(lv[d] / 2);
    basis[d] = static_cast<float>(running);
    running *= lv[d];
    AION_CHECK(running <= (std::int64_t{1} << 24), levels, "prod(levels) must be <= 2^24 for the exact C++ path");
  }
  const auto* t = static_cast<const float*>(tanh_z.data());
  const auto* hl = static_cast<const float*>(half_l.data());
  const auto* off = static_cast<const float*>(offset.data());
  auto* o = static_cast<std::int32_t*>(out.mutable_data());
  py::gil_scoped_release release;
  return cpu::fsq_encode_from_tanh(t, M, D, hl, off, half_width.data(), basis.data(), o);
}

std::int64_t fsq_decode(const py::array& index, const py::array& levels, py::array& out) {
  AION_CHECK_ARRAY(index, std::int32_t, 1);  // (M,)
  AION_CHECK_ARRAY(levels, std::int32_t, 1);  // (D,)
  const py::ssize_t M = index.shape(0), D = levels.shape(0);
  AION_CHECK(D >= 1 && D <= cpu::kMaxChannels, levels, "the number of channels D must lie in [1, 1024]");
  AION_CHECK_ARRAY(out, float, 2);  // (M, D)
  AION_CHECK_DIM(out, 0, M);
  AION_CHECK_DIM(out, 1, D);
  AION_CHECK_OUTPUT(out);
  const auto* lv = static_cast<const std::int32_t*>(levels.data());
  std::int64_t codebook = 1;
  for (py::ssize_t d = 0; d < D; ++d) {
    AION_CHECK(lv[d] >= 2, levels, "every level must be >= 2");
    codebook *= lv[d];
    AION_CHECK(codebook <= INT32_MAX, levels, "prod(levels) must fit in int32");
  }
  const auto* idx = static_cast<const std::int32_t*>(index.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  return cpu::fsq_decode(idx, M, D, lv, o);
}

}  // namespace aion_fast
