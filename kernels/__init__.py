"""Triton kernels of aion_fast, installed as :mod:`aion_fast.kernels` (this folder is mapped into the package by
``[tool.scikit-build.wheel.packages]`` in pyproject.toml, for wheels and editable installs alike).

One module per op (``fsq.py``, ``lfq.py``, ``rms_norm.py``, ...), each holding the ``_<op>_fwd_kernel`` Triton
kernel, its ``<op>_fwd`` launcher and the op's autotune configs at module level. The dispatchers in
:mod:`aion_fast.ops` import these modules only when a CUDA tensor reaches them, so importing ``aion_fast`` never
imports Triton. On CPU the kernels run under ``TRITON_INTERPRET=1`` in the tests.
"""
