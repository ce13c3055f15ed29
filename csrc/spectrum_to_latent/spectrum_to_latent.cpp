// Spectrum grid entry point of aion_fast._C: argument checks (baseline code), then spectrum_to_latent_cpu.cpp.
#include <cstdint>

#include "aion_fast/checks.h"
#include "aion_fast/ops.h"
#include "spectrum_to_latent_cpu.h"

namespace aion_fast {

void spectrum_to_latent(const py::array& flux, const py::array& istd, const py::array& wavelength,
                        const py::array& scale, const py::array& grid, double input_scaling, bool has_clip_flux,
                        double clip_flux, py::array& out) {
  AION_CHECK_ARRAY(flux, float, 2);  // (B, L)
  const py::ssize_t B = flux.shape(0), L = flux.shape(1);
  AION_CHECK(L >= 2, flux, "each spectrum needs at least 2 pixels to interpolate");
  AION_CHECK_ARRAY(istd, float, 2);  // (B, L)
  AION_CHECK_DIM(istd, 0, B);
  AION_CHECK_DIM(istd, 1, L);
  AION_CHECK_ARRAY(wavelength, float, 2);  // (B, L)
  AION_CHECK_DIM(wavelength, 0, B);
  AION_CHECK_DIM(wavelength, 1, L);
  AION_CHECK_ARRAY(scale, float, 1);  // (B,)
  AION_CHECK_DIM(scale, 0, B);
  AION_CHECK_ARRAY(grid, float, 1);  // (G,)
  const py::ssize_t G = grid.shape(0);
  AION_CHECK_ARRAY(out, float, 3);  // (B, 2, G)
  AION_CHECK_DIM(out, 0, B);
  AION_CHECK_DIM(out, 1, 2);
  AION_CHECK_DIM(out, 2, G);
  AION_CHECK_OUTPUT(out);
  const auto* f = static_cast<const float*>(flux.data());
  const auto* v = static_cast<const float*>(istd.data());
  const auto* w = static_cast<const float*>(wavelength.data());
  const auto* n = static_cast<const float*>(scale.data());
  const auto* g = static_cast<const float*>(grid.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  cpu::spectrum_to_latent(f, v, w, B, L, n, g, G, static_cast<float>(input_scaling), has_clip_flux,
                          static_cast<float>(clip_flux), o);
}

}  // namespace aion_fast
