"""Float32 maths helpers shared by the Triton kernels (imports Triton: load only from a kernel module).

Under ``TRITON_INTERPRET=1`` the libdevice functions (``asinh``, ``tanh``) do not exist, so each helper takes a
``USE_LIBDEVICE`` constexpr: True on a GPU (CUDA's own correctly-rounded-within-an-ulp versions, the ones PyTorch's
CUDA kernels call), False under the interpreter, where a formula from the available ops is used. The formulas are
accurate to a few float32 ulps, not bit-identical to PyTorch's CPU (glibc) versions.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

__all__ = ["asinh_f32", "tanh_f32"]


@triton.jit
def asinh_f32(x, USE_LIBDEVICE: tl.constexpr):
    r"""float32 :math:`\operatorname{arcsinh}(x)`.

    Without libdevice: the odd Taylor series :math:`a - a^3/6 + 3a^5/40 - 15a^7/336 + 105a^9/3456` for
    :math:`a = |x| < 1/4` (truncation below 3e-8 relative), :math:`\log(a + \sqrt{a^2 + 1})` up to :math:`2^{60}`
    and :math:`\log a + \log 2` beyond (where :math:`a^2` would overflow), with the sign of ``x``.
    """
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
    r"""float32 :math:`\tanh(x)`.

    Without libdevice: the odd Taylor series :math:`a - a^3/3 + 2a^5/15 - 17a^7/315 + 62a^9/2835` for
    :math:`a = |x| < 1/4`, else :math:`(1 - e^{-2a}) / (1 + e^{-2a})` (no overflow; :math:`\pm\infty \to \pm 1`),
    with the sign of ``x``. Up to 8 ulps from PyTorch's tanh (tested), so the FSQ kernel does NOT use it for
    indices (see :mod:`aion_fast.kernels.fsq`).
    """
    if USE_LIBDEVICE:
        return libdevice.tanh(x)
    else:
        a = tl.abs(x)
        a2 = a * a
        series = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0)))))
        e = tl.exp(-2.0 * a)
        r = tl.where(a < 0.25, series, (1.0 - e) / (1.0 + e))
        return tl.where(x < 0, -r, r)
