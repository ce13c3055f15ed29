// LFQ entry points of aion_fast._C: argument checks (baseline code), then the kernels of lfq_cpu.cpp.
#include <cmath>
#include <cstdint>

#include "aion_fast/checks.h"
#include "aion_fast/cpu_kernels.h"
#include "aion_fast/ops.h"
#include "aion_fast/quantizers.h"

namespace aion_fast {

void lfq_encode(const py::array& z, py::array& out) {
  // z: (O, D, I) float32, any element strides (a view: the channel-first (B, D, T) latents are read in place)
  const StridedView v = strided_view_3d(z, "z");
  AION_CHECK(v.D >= 1 && v.D <= 31, z, "the number of channels D (axis 1) must lie in [1, 31] for int32 indices");
  AION_CHECK_ARRAY(out, std::int32_t, 2);  // (O, I)
  AION_CHECK_DIM(out, 0, v.O);
  AION_CHECK_DIM(out, 1, v.I);
  AION_CHECK_OUTPUT(out);
  auto* o = static_cast<std::int32_t*>(out.mutable_data());
  py::gil_scoped_release release;
  cpu::lfq_encode_strided(v.data, v.O, v.D, v.I, v.s_o, v.s_d, v.s_i, o);
}

py::array lfq_encode_new(const py::array& z, bool wide) {
  const StridedView v = strided_view_3d(z, "z");
  AION_CHECK(v.D >= 1 && v.D <= 31, z, "the number of channels D (axis 1) must lie in [1, 31] for int32 indices");
  if (wide) {
    py::array_t<std::int64_t> out({v.O, v.I});
    std::int64_t* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      cpu::lfq_encode_strided(v.data, v.O, v.D, v.I, v.s_o, v.s_d, v.s_i, nullptr, o);
    }
    return std::move(out);
  }
  py::array_t<std::int32_t> out({v.O, v.I});
  std::int32_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    cpu::lfq_encode_strided(v.data, v.O, v.D, v.I, v.s_o, v.s_d, v.s_i, o);
  }
  return out;
}

std::int64_t lfq_decode(const py::array& index, double scale, py::array& out) {
  AION_CHECK_ARRAY(index, std::int32_t, 1);  // (M,)
  AION_CHECK_ARRAY(out, float, 2);            // (M, D)
  const py::ssize_t M = index.shape(0), D = out.shape(1);
  AION_CHECK_DIM(out, 0, M);
  AION_CHECK(D >= 1 && D <= 31, out, "the number of channels D must lie in [1, 31] for int32 indices");
  AION_CHECK_OUTPUT(out);
  AION_CHECK(std::isfinite(scale), scale, "must be finite");
  const auto* idx = static_cast<const std::int32_t*>(index.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  return cpu::lfq_decode(idx, M, D, static_cast<float>(scale), o);
}

}  // namespace aion_fast
