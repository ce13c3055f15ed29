// Winograd convolution entry points of aion_fast._C: argument checks (baseline code), then winograd_conv2d_cpu.cpp.
#include <cstdint>

#include "aion_fast/checks.h"
#include "aion_fast/ops.h"
#include "winograd_conv2d_cpu.h"

namespace aion_fast {

namespace {

void check_tile(const py::array& bt_or_at, int n, int m) {
  check_arg((n == 4 || n == 6 || n == 8) && m >= 1 && m < n, "tile",
            "expected n in {4, 6, 8} and 1 <= m < n, got m = " + std::to_string(m) + ", n = " + std::to_string(n));
  (void)bt_or_at;
}

}  // namespace

void winograd_input_transform(const py::array& x, const py::array& bt, std::int64_t m, std::int64_t pad,
                              std::int64_t tiles_h, std::int64_t tiles_w, std::int64_t tile_begin, py::array& out) {
  AION_CHECK_ARRAY(x, float, 4);  // (B, H, W, C)
  AION_CHECK_ARRAY(bt, float, 2);  // (n, n)
  const py::ssize_t n = bt.shape(0);
  AION_CHECK_DIM(bt, 1, n);
  check_tile(bt, static_cast<int>(n), static_cast<int>(m));
  const py::ssize_t B = x.shape(0), H = x.shape(1), W = x.shape(2), C = x.shape(3);
  AION_CHECK(pad >= 0 && pad < n, bt, "pad must be in [0, n)");
  AION_CHECK(tiles_h >= 0 && tiles_w >= 0, x, "tile counts must be non-negative");
  AION_CHECK_ARRAY(out, float, 3);  // (tile_count, n^2, C)
  AION_CHECK_DIM(out, 1, n * n);
  AION_CHECK_DIM(out, 2, C);
  const py::ssize_t count = out.shape(0);
  AION_CHECK(tile_begin >= 0 && tile_begin + count <= B * tiles_h * tiles_w, out,
             "tile range [tile_begin, tile_begin + out.shape[0]) must lie within B * tiles_h * tiles_w tiles");
  AION_CHECK_OUTPUT(out);
  const auto* xp = static_cast<const float*>(x.data());
  const auto* bp = static_cast<const float*>(bt.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  cpu::winograd_input_transform(xp, B, H, W, C, bp, static_cast<int>(n), static_cast<int>(m), static_cast<int>(pad),
                                tiles_h, tiles_w, tile_begin, count, o);
}

void winograd_output_transform(const py::array& mt, const py::array& at, const py::object& bias, std::int64_t tiles_h,
                               std::int64_t tiles_w, std::int64_t tile_begin, py::array& out) {
  AION_CHECK_ARRAY(mt, float, 3);  // (n^2, tile_count, C)
  AION_CHECK_ARRAY(at, float, 2);  // (m, n)
  const py::ssize_t m = at.shape(0), n = at.shape(1);
  check_tile(at, static_cast<int>(n), static_cast<int>(m));
  AION_CHECK_DIM(mt, 0, n * n);
  const py::ssize_t count = mt.shape(1), C = mt.shape(2);
  AION_CHECK_ARRAY(out, float, 4);  // (B, H_out, W_out, C)
  AION_CHECK_DIM(out, 3, C);
  const py::ssize_t B = out.shape(0), H_out = out.shape(1), W_out = out.shape(2);
  AION_CHECK(tiles_h * m >= H_out && tiles_w * m >= W_out, out, "tiles_h * m and tiles_w * m must cover the output");
  AION_CHECK(tile_begin >= 0 && tile_begin + count <= B * tiles_h * tiles_w, mt,
             "tile range [tile_begin, tile_begin + mt.shape[1]) must lie within B * tiles_h * tiles_w tiles");
  AION_CHECK_OUTPUT(out);
  const float* bp = nullptr;
  py::array bias_array;
  if (!bias.is_none()) {
    bias_array = bias.cast<py::array>();
    AION_CHECK_ARRAY(bias_array, float, 1);
    AION_CHECK_DIM(bias_array, 0, C);
    bp = static_cast<const float*>(bias_array.data());
  }
  const auto* mp = static_cast<const float*>(mt.data());
  const auto* ap = static_cast<const float*>(at.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  cpu::winograd_output_transform(mp, ap, bp, static_cast<int>(n), static_cast<int>(m), B, H_out, W_out, C, tiles_h,
                                 tiles_w, tile_begin, count, o);
}

}  // namespace aion_fast
