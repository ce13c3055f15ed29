"""Float32 maths shared by the Triton kernels (imports Triton: load only from a kernel module).

Libdevice (``asinh``, ``tanh``) is missing under ``TRITON_INTERPRET=1``, so each helper takes ``USE_LIBDEVICE``:
CUDA's own functions on a GPU, else a formula from the available ops, a few ulps from PyTorch's CPU (glibc) values.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

__all__ = ["asinh_f32", "tanh_f32"]


@triton.jit
def asinh_f32(x, USE_LIBDEVICE: tl.constexpr):
    r"""float32 :math:`\operatorname{arcsinh}(x)`; without libdevice an odd Taylor series for :math:`|x| < 1/4`,
    :math:`\log(a + \sqrt{a^2 + 1})` up to :math:`2^{60}`, :math:`\log a + \log 2` beyond (no overflow)."""
    if USE_LIBDEVICE:
        return libdevice.asinh(x)
    else:
        a = tl.abs(x)
        a2 = a * a
        series = a * (1.0 + a2 * (-1.0 / 6.0 + a2 * (3.0 / 40.0 + a2 * (-15.0 / 336.0 + a2 * (105.0 / 3456.0)))))
        mid = tl.log(a + tl.sqrt(a2 + 1.0))
        big = tl.log(a) + 0.6931471805599453
        r = tl.where(a < 0.25, series, tl.where(a < 1.152921504606847e18, mid, big))
        return tl.where(x < 0, -r, r)


@triton.jit
def tanh_f32(x, USE_LIBDEVICE: tl.constexpr):
    r"""float32 :math:`\tanh(x)`; without libdevice an odd Taylor series for :math:`|x| < 1/4`, else
    :math:`(1 - e^{-2a}) / (1 + e^{-2a})`. Not bit-identical to PyTorch's, so the FSQ kernel does not use it."""
    if USE_LIBDEVICE:
        return libdevice.tanh(x)
    else:
        a = tl.abs(x)
        a2 = a * a
        series = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0)))))
        e = tl.exp(-2.0 * a)
        r = tl.where(a < 0.25, series, (1.0 - e) / (1.0 + e))
        return tl.where(x < 0, -r, r)
