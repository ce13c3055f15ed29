// FSQ entry points of aion_fast._C: argument checks (baseline code), then the kernels of fsq_cpu.cpp.
#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <vector>

#include "aion_fast/checks.h"
#include "aion_fast/cpu_kernels.h"
#include "aion_fast/ops.h"
#include "aion_fast/quantizers.h"

namespace aion_fast {

namespace {

// Per-channel half widths floor(L/2) and mixed-radix place values prod(L[:d]) as float32, after checking that every
// level and the product stay in the range where the float32 arithmetic of the exact C++ path is exact.
void mixed_radix(const py::array& levels, py::ssize_t D, std::vector<float>& half_width, std::vector<float>& basis) {
  const auto* lv = static_cast<const std::int32_t*>(levels.data());
  half_width.assign(static_cast<size_t>(D), 0.0f);
  basis.assign(static_cast<size_t>(D), 0.0f);
  std::int64_t running = 1;
  for (py::ssize_t d = 0; d < D; ++d) {
    AION_CHECK(lv[d] >= 2 && lv[d] <= 21, levels, "every level must lie in [2, 21] for the exact C++ path");
    half_width[d] = static_cast<float>(lv[d] / 2);
    basis[d] = static_cast<float>(running);
    running *= lv[d];
    AION_CHECK(running <= (std::int64_t{1} << 24), levels, "prod(levels) must be <= 2^24 for the exact C++ path");
  }
}

}  // namespace

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

  std::vector<float> half_width, basis;
  mixed_radix(levels, D, half_width, basis);
  const auto* t = static_cast<const float*>(tanh_z.data());
  const auto* hl = static_cast<const float*>(half_l.data());
  const auto* off = static_cast<const float*>(offset.data());
  auto* o = static_cast<std::int32_t*>(out.mutable_data());
  py::gil_scoped_release release;
  return cpu::fsq_encode_from_tanh(t, M, D, hl, off, half_width.data(), basis.data(), o);
}

namespace {

// The flags torch's CPU tanh passes to MKL VML (ATen/cpu/vml.h): VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE.
constexpr std::int64_t kVmlTorchMode = 0x2 | 0x140000 | 0x100;
cpu::VmlTanhFn g_tanh = nullptr;

cpu::VmlTanhFn bound_tanh() {
  if (g_tanh == nullptr)
    throw py::value_error("fsq: no tanh bound; call fsq_bind_tanh(libtorch_cpu path) first (aion_fast.ops.fsq does)");
  return g_tanh;
}

}  // namespace

std::string fsq_bind_tanh(const std::string& library_path) {
  // RTLD_NOLOAD: only a library torch already loaded, so the symbol is the one its tanh kernel calls.
  void* handle = dlopen(library_path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return "library not loaded in this process: " + library_path;
  void* symbol = dlsym(handle, "VMSTANH_64_");
  if (symbol == nullptr) return "no MKL VML tanh (VMSTANH_64_) in " + library_path + " (torch built without MKL?)";
  g_tanh = reinterpret_cast<cpu::VmlTanhFn>(symbol);
  return "";
}

void fsq_tanh(const py::array& x, py::array& out) {
  AION_CHECK_ARRAY(x, float, 1);    // (N,)
  AION_CHECK_ARRAY(out, float, 1);  // (N,)
  AION_CHECK_DIM(out, 0, x.shape(0));
  AION_CHECK_OUTPUT(out);
  const cpu::VmlTanhFn fn = bound_tanh();
  const std::int64_t n = x.shape(0);
  const auto* in = static_cast<const float*>(x.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  if (n > 0) fn(&n, in, o, &kVmlTorchMode);
}

std::int64_t fsq_encode(const py::array& z, const py::array& levels, const py::array& shift, const py::array& half_l,
                        const py::array& offset, py::array& out) {
  // z: (O, D, I) float32, any element strides (the codecs' channel-first (B, D, T) latents are read in place)
  const StridedView v = strided_view_3d(z, "z");
  AION_CHECK(v.D >= 1 && v.D <= cpu::kMaxChannels, z, "the number of channels D (axis 1) must lie in [1, 1024]");
  const py::ssize_t D = v.D;
  AION_CHECK_ARRAY(levels, std::int32_t, 1);  // (D,)
  AION_CHECK_DIM(levels, 0, D);
  AION_CHECK_ARRAY(shift, float, 1);  // (D,)
  AION_CHECK_DIM(shift, 0, D);
  AION_CHECK_ARRAY(half_l, float, 1);  // (D,)
  AION_CHECK_DIM(half_l, 0, D);
  AION_CHECK_ARRAY(offset, float, 1);  // (D,)
  AION_CHECK_DIM(offset, 0, D);
  AION_CHECK_ARRAY(out, std::int32_t, 2);  // (O, I)
  AION_CHECK_DIM(out, 0, v.O);
  AION_CHECK_DIM(out, 1, v.I);
  AION_CHECK_OUTPUT(out);
  const cpu::VmlTanhFn fn = bound_tanh();
  std::vector<float> half_width, basis;
  mixed_radix(levels, D, half_width, basis);
  const auto* sh = static_cast<const float*>(shift.data());
  const auto* hl = static_cast<const float*>(half_l.data());
  const auto* off = static_cast<const float*>(offset.data());
  auto* o = static_cast<std::int32_t*>(out.mutable_data());
  py::gil_scoped_release release;
  return cpu::fsq_encode_strided(v.data, v.O, D, v.I, v.s_o, v.s_d, v.s_i, sh, hl, off, half_width.data(),
                                 basis.data(), fn, kVmlTorchMode, o);
}

namespace {

// Checks the arguments of the threshold encode of z (viewed as v: (O, D, I)) and runs it into out (O, I) int32.
std::int64_t run_fsq_encode_thresholds(const StridedView& v, const py::array& shift, const py::array& thresholds,
                                       const py::array& first, const py::array& basis, std::int64_t base,
                                       std::int32_t* out, std::int64_t* out64 = nullptr) {
  AION_CHECK(v.D >= 1 && v.D <= cpu::kMaxChannels, z, "the number of channels D (axis 1) must lie in [1, 1024]");
  const py::ssize_t D = v.D;
  AION_CHECK_ARRAY(shift, float, 1);  // (D,)
  AION_CHECK_DIM(shift, 0, D);
  AION_CHECK_ARRAY(thresholds, float, 1);  // (T,)
  AION_CHECK_ARRAY(first, std::int32_t, 1);  // (D + 1,)
  AION_CHECK_DIM(first, 0, D + 1);
  AION_CHECK_ARRAY(basis, std::int32_t, 1);  // (D,)
  AION_CHECK_DIM(basis, 0, D);
  AION_CHECK(base >= 0 && base < (std::int64_t{1} << 31), base, "must lie in [0, 2^31)");
  const auto* f = static_cast<const std::int32_t*>(first.data());
  AION_CHECK(f[0] == 0 && f[D] == thresholds.shape(0), first, "must run from 0 to len(thresholds)");
  for (py::ssize_t d = 0; d < D; ++d) AION_CHECK(f[d] <= f[d + 1], first, "must be non-decreasing");
  const auto* sh = static_cast<const float*>(shift.data());
  const auto* th = static_cast<const float*>(thresholds.data());
  const auto* bs = static_cast<const std::int32_t*>(basis.data());
  py::gil_scoped_release release;
  return cpu::fsq_encode_thresholds(v.data, v.O, D, v.I, v.s_o, v.s_d, v.s_i, sh, th, f, bs,
                                    static_cast<std::int32_t>(base), out, out64);
}

}  // namespace

std::int64_t fsq_encode_thresholds(const py::array& z, const py::array& shift, const py::array& thresholds,
                                   const py::array& first, const py::array& basis, std::int64_t base,
                                   py::array& out) {
  // z: (O, D, I) float32, any element strides
  const StridedView v = strided_view_3d(z, "z");
  AION_CHECK_ARRAY(out, std::int32_t, 2);  // (O, I)
  AION_CHECK_DIM(out, 0, v.O);
  AION_CHECK_DIM(out, 1, v.I);
  AION_CHECK_OUTPUT(out);
  return run_fsq_encode_thresholds(v, shift, thresholds, first, basis, base,
                                   static_cast<std::int32_t*>(out.mutable_data()));
}

py::tuple fsq_encode_thresholds_new(const py::array& z, const py::array& shift, const py::array& thresholds,
                                    const py::array& first, const py::array& basis, std::int64_t base, bool wide) {
  const StridedView v = strided_view_3d(z, "z");
  if (wide) {
    py::array_t<std::int64_t> out({v.O, v.I});
    const std::int64_t n_nan =
        run_fsq_encode_thresholds(v, shift, thresholds, first, basis, base, nullptr, out.mutable_data());
    return py::make_tuple(std::move(out), n_nan);
  }
  py::array_t<std::int32_t> out({v.O, v.I});
  const std::int64_t n_nan =
      run_fsq_encode_thresholds(v, shift, thresholds, first, basis, base, out.mutable_data());
  return py::make_tuple(std::move(out), n_nan);
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
