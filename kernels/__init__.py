"""Triton kernels of aion_fast, installed as :mod:`aion_fast.kernels` (this folder is mapped into the package by
``[tool.scikit-build.wheel.packages]`` in pyproject.toml, for wheels and editable installs alike).

One module per op (FSQ and LFQ quantization, image preprocessing and postprocessing, spectrum resampling to the
latent grid and back to observed wavelengths), each holding its ``_<op>_fwd_kernel`` Triton kernels, their
``<op>_fwd`` launchers and the op's fixed block size at module level (no autotuning); ``_math.py`` holds the float32
maths the kernels share and ``utils.py`` the launchers' plain-Python helpers. The dispatchers in :mod:`aion_fast.ops`
import these modules only when a CUDA tensor reaches them, so importing ``aion_fast`` never imports Triton. On CPU the
kernels run under ``TRITON_INTERPRET=1`` in the tests.
"""
