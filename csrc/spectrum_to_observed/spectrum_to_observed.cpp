// Spectrum decode epilogue entry point of aion_fast._C: argument checks (baseline code), then
// spectrum_to_observed_cpu.cpp.
#include <cstdint>
#include <string>

#include "aion_fast/checks.h"
#include "aion_fast/ops.h"
#include "spectrum_to_observed_cpu.h"

namespace aion_fast {

std::int64_t spectrum_to_observed(const py::array& values, const py::array& grid, const py::object& wavelength,
                                  const py::object& scale, py::array& flux, py::array& mask) {
  AION_CHECK_ARRAY(values, float, 3);  // (B, K, G)
  const py::ssize_t B = values.shape(0), K = values.shape(1), G = values.shape(2);
  AION_CHECK(K == 1 || K == 2, values, "expected K = 1 (flux) or 2 (flux and mask logit) channels");
  AION_CHECK(G >= 2, values, "the latent grid needs at least 2 points");
  AION_CHECK_ARRAY(grid, float, 1);  // (G,)
  AION_CHECK_DIM(grid, 0, G);
  const float* w = nullptr;
  py::ssize_t M = G;
  py::array wavelength_array;
  if (!wavelength.is_none()) {
    wavelength_array = wavelength.cast<py::array>();
    AION_CHECK_ARRAY(wavelength_array, float, 2);  // (B, M)
    AION_CHECK_DIM(wavelength_array, 0, B);
    M = wavelength_array.shape(1);
    w = static_cast<const float*>(wavelength_array.data());
  }
  const float* n = nullptr;
  py::array scale_array;
  if (!scale.is_none()) {
    scale_array = scale.cast<py::array>();
    AION_CHECK_ARRAY(scale_array, float, 1);  // (B,)
    AION_CHECK_DIM(scale_array, 0, B);
    n = static_cast<const float*>(scale_array.data());
  }
  AION_CHECK_ARRAY(flux, float, 2);  // (B, M)
  AION_CHECK_DIM(flux, 0, B);
  AION_CHECK_DIM(flux, 1, M);
  AION_CHECK_OUTPUT(flux);
  if (!py::isinstance<py::array_t<bool>>(mask))
    throw py::type_error("mask: expected dtype bool, got " + py::str(mask.dtype()).cast<std::string>());
  check_ndim(mask, "mask", 2);  // (B, M)
  check_contiguous(mask, "mask");
  AION_CHECK_DIM(mask, 0, B);
  AION_CHECK_DIM(mask, 1, M);
  AION_CHECK_OUTPUT(mask);
  const auto* v = static_cast<const float*>(values.data());
  const auto* g = static_cast<const float*>(grid.data());
  auto* f = static_cast<float*>(flux.mutable_data());
  auto* mk = static_cast<std::uint8_t*>(mask.mutable_data());
  py::gil_scoped_release release;
  return cpu::spectrum_to_observed(v, B, K, G, g, w, M, n, f, mk);
}

}  // namespace aion_fast
