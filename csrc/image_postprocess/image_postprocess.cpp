// Image decode epilogue entry point of aion_fast._C: argument checks (baseline code), then image_postprocess_cpu.cpp.
#include <cstdint>

#include "aion_fast/checks.h"
#include "aion_fast/ops.h"
#include "image_postprocess_cpu.h"

namespace aion_fast {

void image_postprocess(const py::array& projected, const py::array& bias, const py::array& channel,
                       double range_compression_factor, double mult_factor, double zeropoint_scale, py::array& out) {
  AION_CHECK_ARRAY(projected, float, 4);  // (B, H, W, NB)
  const py::ssize_t B = projected.shape(0), H = projected.shape(1), W = projected.shape(2);
  const py::ssize_t NB = projected.shape(3);
  AION_CHECK_ARRAY(bias, float, 1);  // (NB,)
  AION_CHECK_DIM(bias, 0, NB);
  AION_CHECK_ARRAY(channel, std::int32_t, 1);  // (C,)
  const py::ssize_t C = channel.shape(0);
  AION_CHECK_ARRAY(out, float, 4);  // (B, C, H, W)
  AION_CHECK_DIM(out, 0, B);
  AION_CHECK_DIM(out, 1, C);
  AION_CHECK_DIM(out, 2, H);
  AION_CHECK_DIM(out, 3, W);
  AION_CHECK_OUTPUT(out);
  const auto* ch = static_cast<const std::int32_t*>(channel.data());
  for (py::ssize_t i = 0; i < C; ++i)
    AION_CHECK(ch[i] >= 0 && ch[i] < NB, channel, "every channel must lie in [0, NB)");
  const auto* p = static_cast<const float*>(projected.data());
  const auto* b = static_cast<const float*>(bias.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  cpu::image_postprocess(p, B, H * W, NB, b, ch, C, static_cast<float>(range_compression_factor),
                         static_cast<float>(mult_factor), static_cast<float>(zeropoint_scale), o);
}

void sinh_f32(const py::array& x, py::array& out) {
  AION_CHECK_ARRAY(x, float, 1);  // (N,)
  AION_CHECK_ARRAY(out, float, 1);  // (N,)
  AION_CHECK_DIM(out, 0, x.shape(0));
  AION_CHECK_OUTPUT(out);
  const auto* in = static_cast<const float*>(x.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  cpu::sinh_f32_array(in, x.shape(0), o);
}

}  // namespace aion_fast
