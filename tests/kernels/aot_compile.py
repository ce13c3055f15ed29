"""Ahead-of-time compilation of every Triton kernel of ``kernels/`` for NVIDIA targets, on a machine without a GPU.

Run as a script in a process where Triton is imported in compiled mode (``TRITON_INTERPRET`` unset)::

    python -m tests.kernels.aot_compile --arch 80 --arch 90 [--json out.json]

How the launch configurations are found: each kernel module's ``@triton.jit`` functions are replaced by recorders,
then the public ops of :mod:`aion_fast.ops` are called on CPU tensors with the shapes the codecs use, with
``AION_FAST_BACKEND=triton`` and the interpreter switch on (read by the dispatcher only: Triton itself stays in
compiled mode). Every launch the launchers make is recorded (argument types, constexprs, options) instead of run,
and each distinct configuration is compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch,
32))``: TTIR -> TTGIR -> LLVM -> PTX -> cubin with the ``ptxas`` bundled in the Triton wheel. Nothing is launched.

``USE_LIBDEVICE`` is recorded as False on CPU tensors and compiled as True: the value the launchers pass on a GPU.
Every ``@triton.jit`` kernel of ``kernels/`` must be launched by at least one call (checked), so a new kernel
without a driving call here fails the test instead of going unchecked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

KERNEL_MODULES = ("fsq", "lfq", "image_preprocess", "image_postprocess", "spectrum_to_latent", "spectrum_to_observed")
#: Launch options that are compiler options, not kernel arguments.
OPTION_NAMES = ("num_warps", "num_stages", "num_ctas", "enable_fp_fusion", "maxnreg")


@dataclass
class Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` records the call instead of running it."""

    fn: Any
    calls: list[tuple[tuple, dict]] = field(default_factory=list)

    def __getitem__(self, grid: Any):
        def launch(*args: Any, **kwargs: Any) -> None:
            import torch

            self.calls.append((args, kwargs))
            for arg in args:  # integer outputs (counts, flags, indices) read as 0: the launchers' callers go on
                if isinstance(arg, torch.Tensor) and not arg.is_floating_point():
                    arg.zero_()

        return launch


def _arg_type(value: Any) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        names = {torch.float32: "fp32", torch.int32: "i32", torch.int64: "i64", torch.int8: "i8", torch.uint8: "u8",
                 torch.bfloat16: "bf16", torch.float16: "fp16", torch.bool: "i1"}  # fmt: skip
        return "*" + names[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unsupported kernel argument {type(value).__name__}")


def configurations(recorders: dict[str, Recorder]) -> list[dict]:
    """Distinct (kernel, signature, constexprs, options) of the recorded launches."""
    seen: dict[str, dict] = {}
    for qualname, rec in recorders.items():
        fn = rec.fn
        for args, kwargs in rec.calls:
            options = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTION_NAMES}
            bound = dict(zip(fn.arg_names, args, strict=False))
            bound.update(kwargs)
            signature, constexprs = {}, {}
            for param in fn.params:
                value = bound[param.name]
                if param.is_constexpr:
                    if param.name == "USE_LIBDEVICE":
                        value = True  # what the launchers pass on a GPU
                    signature[param.name] = "constexpr"
                    constexprs[param.name] = value
                else:
                    signature[param.name] = _arg_type(value)
            key = json.dumps([qualname, signature, constexprs, options], sort_keys=True, default=str)
            seen.setdefault(key, {"kernel": qualname, "signature": signature, "constexprs": constexprs,
                                  "options": options})  # fmt: skip
    return list(seen.values())


def record_launches() -> dict[str, Recorder]:
    """Patches every kernel of ``kernels/`` with a :class:`Recorder` and drives the ops with realistic shapes."""
    import torch
    import triton

    recorders: dict[str, Recorder] = {}
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"aion_fast.kernels.{name}")
        for attr, value in list(vars(module).items()):
            if isinstance(value, triton.runtime.jit.JITFunction) and attr.endswith("_kernel"):
                rec = Recorder(value)
                setattr(module, attr, rec)
                recorders[f"{name}.{attr}"] = rec
    os.environ["AION_FAST_BACKEND"] = "triton"
    os.environ["TRITON_INTERPRET"] = "1"  # the dispatcher then routes CPU tensors to Triton (Triton is imported)
    try:
        _drive_ops(torch)
    finally:
        del os.environ["AION_FAST_BACKEND"], os.environ["TRITON_INTERPRET"]
    return recorders


def _drive_ops(torch: Any) -> None:
    from aion_fast.codecs.preprocessing import band_indices, clamp_bounds, survey_bands, zeropoint_scale
    from aion_fast.ops import (
        fsq_decode,
        fsq_encode,
        image_postprocess,
        image_preprocess,
        lfq_decode,
        lfq_encode,
        spectrum_to_latent,
        spectrum_to_observed,
    )

    g = torch.Generator().manual_seed(0)
    # Image codec: FSQ levels [7, 5, 5, 5, 5] on (B, 5, 24, 24) latents; decode of the same indices.
    for levels in ([7, 5, 5, 5, 5], [8, 5, 5, 5]):
        z = torch.randn(2, len(levels), 24, 24, generator=g)
        fsq_encode(z, levels, 1e-3, channel_first=True)
        fsq_decode(torch.zeros(2, 576, dtype=torch.int32), levels)
    # Spectrum codec: LFQ dim 10 on (B, 10, 272) latents; decode.
    lfq_encode(torch.randn(2, 10, 272, generator=g), channel_first=True)
    lfq_decode(torch.zeros(2, 272, dtype=torch.int32), 10, 0.5)
    # Image preprocessing: Legacy Survey (4 bands, 160 px) and HSC (5 bands, 96 px), crop 96, 9 channels; decode
    # epilogue on the (B, 54, 96, 96) decoder output.
    for survey, size in (("DES", 160), ("HSC", 96)):
        bands = survey_bands(survey)
        flux = torch.randn(2, len(bands), size, size, generator=g)
        image_preprocess(flux, band_indices(bands), clamp_bounds(bands).flatten().tolist(), zeropoint_scale(survey))
        h = torch.randn(2, 54, 96, 96, generator=g)
        image_postprocess(h, torch.randn(9, 54, generator=g), torch.randn(9, generator=g), band_indices(bands),
                          zeropoint_scale(survey))  # fmt: skip
    # Spectra onto the 8704-point latent grid: DESI (7781 px) and SDSS-like lengths, with and without a flux clip.
    grid = 3500.0 + 0.8 * torch.arange(8704, dtype=torch.float32)
    for length, clip in ((7781, None), (3864, None), (4639, 50.0)):
        wave = torch.linspace(3600.0, 9800.0, length).expand(2, length)
        spectrum_to_latent(torch.randn(2, length, generator=g), torch.rand(2, length, generator=g) + 0.1, wave,
                           torch.ones(2), grid, clip_flux=clip)  # fmt: skip
    # Decode epilogue: on the grid itself, and onto requested wavelengths, with and without the flux scale.
    values = torch.randn(2, 2, 8704, generator=g)
    spectrum_to_observed(values, grid)
    spectrum_to_observed(values, grid, torch.linspace(3600.0, 9800.0, 7781).expand(2, 7781), torch.ones(2))
    spectrum_to_observed(values[:, :1], grid, torch.linspace(3600.0, 9800.0, 3864))


def compile_all(configs: list[dict], arch: int) -> list[dict]:
    """Compiles every configuration for ``sm_<arch>``; one result per configuration (errors kept, not raised)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = []
    for cfg in configs:
        module_name, attr = cfg["kernel"].split(".")
        fn = getattr(importlib.import_module(f"aion_fast.kernels.{module_name}"), attr)
        fn = fn.fn if isinstance(fn, Recorder) else fn
        start = time.perf_counter()
        result = {**cfg, "arch": arch}
        try:
            src = ASTSource(fn, cfg["signature"], constexprs=cfg["constexprs"])
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=cfg["options"])
            cubin = compiled.asm.get("cubin", b"")
            result.update(ok=bool(cubin), cubin_bytes=len(cubin), n_regs=getattr(compiled, "n_regs", None),
                          shared=getattr(compiled.metadata, "shared", None))  # fmt: skip
            if not cubin:
                result["error"] = "no cubin produced"
        except Exception as exc:  # noqa: BLE001 - reported per configuration
            result.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[-2000:]}")
        result["seconds"] = round(time.perf_counter() - start, 2)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90 (repeatable)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "no", "off"):
        print("aot_compile: unset TRITON_INTERPRET (compiling needs Triton in compiled mode)", file=sys.stderr)
        return 2
    recorders = record_launches()
    unlaunched = sorted(name for name, rec in recorders.items() if not rec.calls)
    configs = configurations(recorders)
    results = [r for arch in (args.arch or [80, 90]) for r in compile_all(configs, arch)]
    report = {"kernels": sorted(recorders), "unlaunched": unlaunched, "configurations": len(configs),
              "results": results}  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    for r in results:
        status = "ok" if r["ok"] else "FAILED " + r["error"].splitlines()[-1][:200]
        print(f"sm_{r['arch']} {r['kernel']:52s} {json.dumps(r['constexprs'], default=str):80s} {r['seconds']:5.1f}s "
              f"{status}")  # fmt: skip
    for name in unlaunched:
        print(f"kernel {name} was never launched by the driving calls: add a call to tests/kernels/aot_compile.py")
    return 0 if all(r["ok"] for r in results) and not unlaunched else 1


if __name__ == "__main__":
    sys.exit(main())
