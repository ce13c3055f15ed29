"""Triton kernels of aion_fast, installed as :mod:`aion_fast.kernels` (mapped into the package by
``[tool.scikit-build.wheel.packages]``). One module per op, each with its ``_<op>_fwd_kernel`` kernels, ``<op>_fwd``
launchers and fixed block sizes (no autotuning); ``_math.py`` holds shared float32 maths. :mod:`aion_fast.ops` imports
them only when a CUDA tensor arrives (so importing ``aion_fast`` never imports Triton); the tests run them on CPU
under ``TRITON_INTERPRET=1``.
"""
