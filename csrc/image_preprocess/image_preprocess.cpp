// Image preprocessing entry point of aion_fast._C: argument checks (baseline code), then image_preprocess_cpu.cpp.
#include <cstdint>

#include "aion_fast/checks.h"
#include "aion_fast/ops.h"
#include "image_preprocess_cpu.h"

namespace aion_fast {

std::int64_t image_preprocess(const py::array& flux, std::int64_t top, std::int64_t left, std::int64_t crop_size,
                              const py::array& channel, const py::array& clamp_max, double zeropoint_scale,
                              double range_compression_factor, double mult_factor, py::array& out,
                              py::array& nonfinite) {
  AION_CHECK_ARRAY(flux, float, 4);  // (B, C, H, W)
  const py::ssize_t B = flux.shape(0), C = flux.shape(1), H = flux.shape(2), W = flux.shape(3);
  AION_CHECK(crop_size >= 1 && top >= 0 && left >= 0 && top + crop_size <= H && left + crop_size <= W, flux,
             "the crop window [top, top + crop_size) x [left, left + crop_size) must lie inside (H, W)");
  AION_CHECK_ARRAY(channel, std::int32_t, 1);  // (C,)
  AION_CHECK_DIM(channel, 0, C);
  AION_CHECK_ARRAY(clamp_max, float, 1);  // (C,)
  AION_CHECK_DIM(clamp_max, 0, C);
  AION_CHECK_ARRAY(out, float, 4);  // (B, S, S, NB)
  AION_CHECK_DIM(out, 0, B);
  AION_CHECK_DIM(out, 1, crop_size);
  AION_CHECK_DIM(out, 2, crop_size);
  AION_CHECK_OUTPUT(out);
  const py::ssize_t NB = out.shape(3);
  AION_CHECK_ARRAY(nonfinite, std::int32_t, 1);  // (B,)
  AION_CHECK_DIM(nonfinite, 0, B);
  AION_CHECK_OUTPUT(nonfinite);
  const auto* ch = static_cast<const std::int32_t*>(channel.data());
  for (py::ssize_t i = 0; i < C; ++i) AION_CHECK(ch[i] >= 0 && ch[i] < NB, channel, "every channel must lie in [0, NB)");
  const auto* x = static_cast<const float*>(flux.data());
  const auto* m = static_cast<const float*>(clamp_max.data());
  auto* o = static_cast<float*>(out.mutable_data());
  auto* bad = static_cast<std::int32_t*>(nonfinite.mutable_data());
  py::gil_scoped_release release;
  return cpu::image_preprocess(x, B, C, H, W, top, left, crop_size, ch, m, static_cast<float>(zeropoint_scale),
                               static_cast<float>(range_compression_factor), static_cast<float>(mult_factor), NB, o,
                               bad);
}

}  // namespace aion_fast
