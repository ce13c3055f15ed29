// Argument checks for the private pybind11 module aion_fast._C.
//
// The CPU ops take numpy arrays (Python passes `tensor.numpy()`, a zero-copy view of a CPU tensor). Nothing is
// converted silently: a wrong dtype raises TypeError, a wrong rank, shape, layout or a read-only output raises
// ValueError, and every message names the argument and states what was expected.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>

namespace aion_fast {
namespace py = pybind11;

template <typename T>
inline const char* dtype_name();
template <>
inline const char* dtype_name<float>() {
  return "float32";
}
template <>
inline const char* dtype_name<std::int32_t>() {
  return "int32";
}

inline std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

template <typename T>
inline void check_dtype(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a)) {
    throw py::type_error(std::string(name) + ": expected dtype " + dtype_name<T>() + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  }
}

inline void check_ndim(const py::array& a, const char* name, py::ssize_t ndim) {
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + "-D array, got shape " +
                          shape_str(a));
  }
}

inline void check_dim(const py::array& a, const char* name, py::ssize_t axis, py::ssize_t size, const char* what) {
  if (a.shape(axis) != size) {
    throw py::value_error(std::string(name) + ": expected size " + std::to_string(size) + " (" + what +
                          ") on axis " + std::to_string(axis) + ", got shape " + shape_str(a));
  }
}

inline void check_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + ": expected a C-contiguous array (call .contiguous() first), shape " +
                          shape_str(a));
  }
}

inline void check_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + ": output array is read-only");
}

inline void check_arg(bool ok, const char* name, const std::string& what) {
  if (!ok) throw py::value_error(std::string(name) + ": " + what);
}

// A float32 array of rank 3 (O, D, I) with any non-negative element strides, read without a copy.
struct StridedView {
  const float* data;
  py::ssize_t O, D, I, s_o, s_d, s_i;  // sizes, strides in elements
};

inline StridedView strided_view_3d(const py::array& a, const char* name) {
  check_dtype<float>(a, name);
  check_ndim(a, name, 3);
  py::ssize_t s[3];
  for (int k = 0; k < 3; ++k) {
    const py::ssize_t bytes = a.strides(k);
    if (bytes < 0 || bytes % static_cast<py::ssize_t>(sizeof(float)) != 0)
      throw py::value_error(std::string(name) + ": strides must be non-negative multiples of 4 bytes, shape " +
                            shape_str(a));
    s[k] = bytes / static_cast<py::ssize_t>(sizeof(float));
  }
  return {static_cast<const float*>(a.data()), a.shape(0), a.shape(1), a.shape(2), s[0], s[1], s[2]};
}

}  // namespace aion_fast

// AION_CHECK_ARRAY(arr, T, ndim): dtype T (TypeError), rank ndim and C-contiguous (ValueError).
#define AION_CHECK_ARRAY(arr, T, ndim)                 \
  do {                                                 \
    ::aion_fast::check_dtype<T>((arr), #arr);          \
    ::aion_fast::check_ndim((arr), #arr, (ndim));      \
    ::aion_fast::check_contiguous((arr), #arr);        \
  } while (0)

// AION_CHECK_DIM(arr, axis, size): arr.shape[axis] == size, `size` is named in the message.
#define AION_CHECK_DIM(arr, axis, size) ::aion_fast::check_dim((arr), #arr, (axis), (size), #size)

// AION_CHECK_OUTPUT(arr): the output buffer can be written.
#define AION_CHECK_OUTPUT(arr) ::aion_fast::check_writeable((arr), #arr)

// AION_CHECK(cond, arr, message): generic ValueError naming the argument.
#define AION_CHECK(cond, arr, message) ::aion_fast::check_arg((cond), #arr, (message))
