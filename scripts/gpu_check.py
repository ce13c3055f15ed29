"""The steps of ``scripts/gpu_check.sh``: one GPU proof run, each step a separate process with its own time box.

    python scripts/gpu_check.py --list                      # step names and time boxes, one per line
    python scripts/gpu_check.py --step NAME --out DIR [--dry-run]
    python scripts/gpu_check.py --summarize --out DIR       # DIR/summary.json + DIR/summary.md

Each step writes ``DIR/steps/<NAME>.json``: ``{"name", "status": ok|failed|skipped, "seconds", "reason",
"figures"}``; the shell script records ``timeout`` (exit 124) and crashes itself. ``--dry-run`` runs every step's
logic on the CPU with tiny sizes (the build is skipped and pytest only collects), so the script's logic is tested
without a GPU (tests/scripts/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "aion_fast" / "data" / "sample" / "mmu"
DEMO = ROOT / "aion_fast" / "data" / "demo_model"
#: (step, time box in seconds on the GPU machine); the boxes sum to under 8 minutes.
STEPS: list[tuple[str, int]] = [
    ("versions", 10),
    ("wheels", 25),
    ("build", 120),
    ("extension", 20),
    ("tests_kernels", 60),
    ("tests_gpu", 45),
    ("op_probes", 40),
    ("encode_compare", 45),
    ("bench_encode", 50),
    ("bench_train", 35),
    ("bench_int8", 25),
]
#: Dense bf16 peak FLOP/s by device name fragment (NVIDIA data sheets, SXM parts); AION_FAST_PEAK_FLOPS overrides.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}


class Skip(Exception):
    """The step cannot run here; the message says why."""


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _device(dry: bool) -> str:
    import torch

    if dry:
        return "cpu"
    if not torch.cuda.is_available():
        raise Skip("no CUDA device (use --dry-run to exercise the logic on the CPU)")
    return "cuda"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: str, rounds: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` (device-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _reference_available() -> str | None:
    import importlib.util

    if importlib.util.find_spec("aion") is None:
        return "the reference package `aion` (polymathic-aion) is not installed: carry its wheel (README)"
    return None


# ---- steps ----------------------------------------------------------------------------------------------------------


def step_versions(dry: bool) -> dict:
    import torch

    figures: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                               "torch_cuda": torch.version.cuda}  # fmt: skip
    for name in ("triton", "numpy", "aion", "flash_attn", "nvidia.dali", "torchao"):
        try:
            module = __import__(name, fromlist=["__version__"])
            figures[name] = getattr(module, "__version__", "installed")
        except Exception as exc:  # noqa: BLE001
            figures[name] = f"absent ({type(exc).__name__})"
    nvcc = shutil.which("nvcc")
    figures["nvcc"] = _run([nvcc, "--version"], 10).stdout.strip().splitlines()[-1] if nvcc else "not found"
    if torch.cuda.is_available():
        figures["gpu"] = torch.cuda.get_device_name()
        figures["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        figures["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    smi = shutil.which("nvidia-smi")
    if smi:
        out = _run([smi, "--query-gpu=name,driver_version,clocks.max.sm", "--format=csv,noheader"], 10)
        figures["nvidia_smi"] = out.stdout.strip()
    try:
        figures["commit"] = _run(["git", "rev-parse", "--short", "HEAD"], 10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        figures["commit"] = "unknown"
    return figures


def step_wheels(dry: bool) -> dict:
    folder = os.environ.get("AION_FAST_WHEELS", "")
    if not folder:
        raise Skip("AION_FAST_WHEELS is not set (a folder of carried wheels, README 'GPU check')")
    wheels = sorted(str(p) for p in Path(folder).glob("*.whl"))
    if not wheels:
        raise Skip(f"no wheels in AION_FAST_WHEELS={folder}")
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *wheels]
    if dry:
        return {"would_run": " ".join(cmd), "wheels": [Path(w).name for w in wheels]}
    result = _run(cmd, 120)
    if result.returncode:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    return {"installed": [Path(w).name for w in wheels]}


def step_build(dry: bool) -> dict:
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
    if dry:
        raise Skip("dry run: the package is not rebuilt")
    import torch

    env = {"AION_FAST_CUDA": "ON", "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 8)}
    if torch.cuda.is_available():  # compile the CUDA sources for this device only (minutes less)
        major, minor = torch.cuda.get_device_capability()
        env["CUDAARCHS"] = f"{major}{minor}"
    start = time.perf_counter()
    result = _run(cmd, 600, env)
    log = result.stdout[-3000:] + result.stderr[-3000:]
    if result.returncode:
        raise RuntimeError(log)
    return {"seconds": round(time.perf_counter() - start, 1), "log_tail": log[-600:]}


def step_extension(dry: bool) -> dict:
    import torch

    from aion_fast import dispatch

    ext = dispatch.load_extension()
    figures = {"extension": "ok" if ext is not None else dispatch.extension_error(),
               "available_backends": dispatch.available_backends()}  # fmt: skip
    problems = []
    if ext is None:
        problems.append(f"aion_fast._C does not load: {dispatch.extension_error()}")
    else:
        figures["build_info"] = str(ext.build_info()) if hasattr(ext, "build_info") else "n/a"
        figures["roar_has_cuda"] = bool(ext.roar_has_cuda())
        if not dry and torch.version.cuda and not ext.roar_has_cuda():
            problems.append("aion_fast._C was built without its CUDA sources (nvcc not found at build time?)")
    try:
        import aion_fast.kernels.fsq  # noqa: F401 - imports Triton

        figures["kernels"] = "import ok"
    except Exception as exc:  # noqa: BLE001
        problems.append(f"aion_fast.kernels does not import: {type(exc).__name__}: {exc}")
    if not dry and "triton" not in figures["available_backends"]:
        problems.append(f"Triton is not usable: {dispatch.triton_unavailable_reason()}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return figures


def _pytest(args: list[str], dry: bool, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *args]
    if dry:
        cmd.append("--collect-only")
    result = _run(cmd, timeout, {"HF_HUB_OFFLINE": "1"})
    last = (result.stdout.strip().splitlines() or [""])[-1]
    figures = {"command": " ".join(cmd[2:]), "result": last, "returncode": result.returncode}
    if result.returncode not in (0, 5):  # 5: nothing collected
        figures["tail"] = result.stdout[-4000:] + result.stderr[-1000:]
        raise RuntimeError(json.dumps(figures))
    return figures


def step_tests_kernels(dry: bool) -> dict:
    # The AOT compile test proves nothing more on a GPU machine than in CI: skipped to save the time box.
    return _pytest(["tests/kernels", "-m", "not slow", "-k", "not every_kernel_compiles"], dry, 300)


def step_tests_gpu(dry: bool) -> dict:
    return _pytest(["tests", "bench", "-m", "gpu", "-o", "python_files=test_*.py bench_*.py"], dry, 300)


def _probe(name: str, ours, ref, exact: bool) -> dict:
    import torch

    outs = ours if isinstance(ours, tuple) else (ours,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    result: dict[str, Any] = {"op": name, "exact_expected": exact}
    equal, total, max_err = 0, 0, 0.0
    for a, b in zip(outs, refs, strict=True):
        a, b = a.detach(), b.detach()
        same = (a == b) | (torch.isnan(a) & torch.isnan(b)) if a.is_floating_point() else a == b
        equal += int(same.sum())
        total += same.numel()
        if a.is_floating_point():
            diff = (a.double() - b.double()).abs()
            diff = torch.where(torch.isnan(diff), torch.zeros_like(diff), diff)
            max_err = max(max_err, float(diff.max()) if diff.numel() else 0.0)
    result.update(bit_equal_fraction=equal / max(total, 1), max_abs_error=max_err, ok=(equal == total) or not exact)
    return result


def step_op_probes(dry: bool) -> dict:
    """Each Triton op (forced) against the PyTorch reference on the same device; GB/s against copy bandwidth."""
    if dry:  # before anything imports Triton: the dispatcher then takes CPU tensors for forced Triton
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from aion_fast import dispatch, ops
    from aion_fast.codecs.preprocessing import band_indices, clamp_bounds, survey_bands

    device = _device(dry)
    b = 2 if dry else 256
    g = torch.Generator().manual_seed(0)
    grid = (3500.0 + 0.8 * torch.arange(8704, dtype=torch.float32)).to(device)
    bands = survey_bands("DES")
    images = (torch.randn(b, 4, 160, 160, generator=g) * 3).to(device)
    latents = (torch.randn(b, 5, 24, 24, generator=g) * 2).to(device)
    lfq_latents = torch.randn(b, 10, 272, generator=g).to(device)
    n = 7781
    wave = (3600.0 + 0.8 * torch.arange(n, dtype=torch.float32)).expand(b, n).contiguous().to(device)
    flux = torch.randn(b, n, generator=g).to(device)
    ivar = (torch.rand(b, n, generator=g) + 0.1).to(device)
    scale = torch.ones(b, device=device)
    values = torch.randn(b, 2, 8704, generator=g).to(device)
    h = (torch.randn(b, 54, 96, 96, generator=g) * 0.1).to(device)  # decoder outputs: compressed flux, O(0.1)
    w = (torch.randn(9, 54, generator=g) / 54**0.5).to(device)
    bias = (torch.randn(9, generator=g) * 0.01).to(device)
    channels, clips = band_indices(bands), clamp_bounds(bands).flatten().tolist()
    fsq_idx = ops.fsq_encode(latents, [7, 5, 5, 5, 5], 1e-3, channel_first=True)
    cases = [
        ("fsq_encode", lambda: ops.fsq_encode(latents, [7, 5, 5, 5, 5], 1e-3, channel_first=True), True,
         latents.numel() * 4 * 2 + fsq_idx.numel() * 4),
        ("fsq_decode", lambda: ops.fsq_decode(fsq_idx, [7, 5, 5, 5, 5]), True, fsq_idx.numel() * 4 * 6),
        ("lfq_encode", lambda: ops.lfq_encode(lfq_latents, channel_first=True), True,
         lfq_latents.numel() * 4 + b * 272 * 4),
        ("lfq_decode", lambda: ops.lfq_decode(ops.lfq_encode(lfq_latents, channel_first=True), 10, 0.5), True,
         b * 272 * 4 * 12),
        ("image_preprocess", lambda: ops.image_preprocess(images, channels, clips), False,
         b * 4 * 96 * 96 * 4 + b * 96 * 96 * 9 * 4),
        ("image_postprocess", lambda: ops.image_postprocess(h, w, bias, channels), False,
         h.numel() * 4 + b * 4 * 96 * 96 * 4),
        ("spectrum_to_latent", lambda: ops.spectrum_to_latent(flux, ivar, wave, scale, grid), False,
         3 * flux.numel() * 4 + b * 2 * 8704 * 4),
        ("spectrum_to_observed", lambda: ops.spectrum_to_observed(values, grid, wave, scale), False,
         values.numel() * 4 + wave.numel() * 4 + b * n * 5),
    ]  # fmt: skip
    probes, failed = [], []
    copy_gbs = None
    if device == "cuda":
        x = torch.empty(1 << 28, dtype=torch.uint8, device=device)
        y = torch.empty_like(x)
        copy_gbs = 2 * x.numel() / _time(lambda: y.copy_(x), device, rounds=5) / 1e9
    for name, fn, exact, nbytes in cases:
        try:
            os.environ[dispatch.ENV_VAR] = "torch"
            ref = fn()
            os.environ[dispatch.ENV_VAR] = "triton"
            ours = fn()
            probe = _probe(name, ours, ref, exact)
            if device == "cuda":
                seconds = _time(fn, device, rounds=10)
                probe.update(seconds=seconds, gb_per_s=nbytes / seconds / 1e9)
                probe["fraction_of_copy"] = probe["gb_per_s"] / copy_gbs
            probes.append(probe)
            if not probe["ok"]:
                failed.append(f"{name}: {probe['bit_equal_fraction']:.6f} equal where exact was expected")
        except Exception as exc:  # noqa: BLE001 - every op is probed
            probes.append({"op": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            os.environ.pop(dispatch.ENV_VAR, None)
    figures = {"device": device, "batch": b, "copy_gb_per_s": copy_gbs, "probes": probes}
    if failed:
        raise RuntimeError(json.dumps({"failed": failed, **figures}, default=str))
    return figures


def _sample_modalities(device: str):
    """The bundled sample's image, spectrum and photometry batches (read with h5py), as modality objects."""
    import h5py
    import torch

    from aion_fast import modalities as m
    from aion_fast.data.mmu import SCALAR_COLUMNS

    out = {}
    with h5py.File(SAMPLE / "legacysurvey" / "healpix=0" / "001-of-001.hdf5", "r") as f:
        out["image"] = [m.LegacySurveyImage(flux=torch.from_numpy(f["image_array"][:]),
                                            bands=["DES-G", "DES-R", "DES-I", "DES-Z"])]  # fmt: skip
        out["image"] += [cls(value=torch.from_numpy(f[col][:])) for col, (cls, group) in SCALAR_COLUMNS.items()
                         if col in f and group == "photometry"]  # fmt: skip
    with h5py.File(SAMPLE / "desi" / "healpix=0" / "001-of-001.hdf5", "r") as f:
        names = {"flux": "flux", "ivar": "ivar", "mask": "mask", "wavelength": "lambda"}
        out["spectrum"] = [m.DESISpectrum(**{k: torch.from_numpy(f[f"spectrum_{c}"][:]) for k, c in names.items()})]
    return out


def _tokens_and_embeddings(device: str, precision: str) -> tuple[dict, dict]:
    import aion_fast
    from aion_fast import AION
    from aion_fast.codecs import CodecManager

    codecs = CodecManager(device=device, repo=DEMO, precision=precision)
    model = AION.from_pretrained(DEMO, device=device, encoder_only=True, precision=precision)
    tokens, embeddings = {}, {}
    for group, batch in _sample_modalities(device).items():
        group_tokens = codecs.encode(*batch)
        tokens.update({f"{group}:{k}": v.cpu() for k, v in group_tokens.items()})
        embeddings[group] = aion_fast.embed(model, group_tokens).cpu()
    return tokens, embeddings


def step_encode_compare(dry: bool) -> dict:
    """Tokens and embeddings of the bundled sample (demo model) on the device (fp32, bf16) vs the CPU's fp32."""
    from aion_fast.precision import embedding_cosine, token_agreement

    device = _device(dry)
    ref_tokens, ref_emb = _tokens_and_embeddings("cpu", "fp32")
    figures: dict[str, Any] = {"device": device}
    problems = []
    for precision in ("fp32", "bf16"):
        tokens, emb = _tokens_and_embeddings(device, precision)
        agreement = token_agreement(tokens, ref_tokens)
        cosine = {g: embedding_cosine(emb[g], ref_emb[g]) for g in emb}
        figures[precision] = {"token_agreement": agreement, "embedding_cosine": cosine}
        if precision == "fp32" and device == "cpu" and (min(agreement.values()) < 1.0):
            problems.append("CPU fp32 tokens differ between two runs")
    job = _encode_job_compare(device, dry)
    figures["job"] = job
    if problems:
        raise RuntimeError("; ".join(problems))
    return figures


def _encode_job_compare(device: str, dry: bool) -> dict:
    """``aion-fast encode`` on the bundled sample on the CPU and on ``device``: embedding cosine per object."""
    import pyarrow.parquet as pq
    import torch

    from aion_fast.precision import embedding_cosine

    files = [str(p) for p in sorted(SAMPLE.glob("*/healpix=0/001-of-001.hdf5"))]
    out_root = Path(os.environ.get("GPU_CHECK_OUT", "/tmp")) / "encode_job"
    shutil.rmtree(out_root, ignore_errors=True)
    help_text = _run([sys.executable, "-m", "aion_fast.cli", "encode", "--help"], 60).stdout
    precisions = ["fp32", "bf16"] if "--precision" in help_text else ["fp32"]
    runs = {}
    for name, dev, precision in [("reference", "cpu", "fp32")] + [(f"{device}-{p}", device, p) for p in precisions]:
        folder = out_root / name
        cmd = [sys.executable, "-m", "aion_fast.cli", "encode", *files, "--output", str(folder), "--device", dev,
               "--batch-size", "64"]  # fmt: skip
        if "--precision" in help_text:
            cmd += ["--precision", precision]
        result = _run(cmd, 120, {"HF_HUB_OFFLINE": "1"})
        if result.returncode:
            return {"error": f"{' '.join(cmd[2:])}: {result.stderr[-1500:]}"}
        tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet")) if p.name != "errors.parquet"]
        rows = {}
        for t in tables:
            for oid, vec in zip(t.column("object_id").to_pylist(), t.column("embedding").to_pylist(), strict=True):
                rows[str(oid)] = vec
        runs[name] = rows
    ref = runs.pop("reference")
    out = {"objects": len(ref), "precisions": precisions}
    for name, rows in runs.items():
        ids = sorted(set(ref) & set(rows))
        a = torch.tensor([rows[i] for i in ids])
        b = torch.tensor([ref[i] for i in ids])
        out[name] = {"objects_compared": len(ids), "embedding_cosine": embedding_cosine(a, b)}
    if "--precision" not in help_text:
        out["note"] = "aion-fast encode has no --precision yet: the job was compared in fp32 only"
    return out


def _base_encode_parts(device: str, dry: bool):
    """Image codec + transformer at base size (tiny on a dry run), random weights, shared with the reference."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import shapes  # bench/shapes.py

    from aion_fast.codecs.image import ImageCodec
    from aion_fast.model import AION, architecture

    keys = ["tok_image", "tok_flux_g", "tok_flux_r", "tok_flux_i", "tok_flux_z"]
    torch.manual_seed(0)
    codec_cfg = dict(shapes.IMAGE_CODEC)
    arch = {}
    if dry:
        codec_cfg.update(hidden_dims=16, num_consecutive=1)
        arch = {"dim": 64, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 4}
    codec = ImageCodec(**codec_cfg).to(device).eval()
    model = AION(architecture(keys, keys, **arch), encoder_only=True).to(device).eval()
    return shapes, codec, model, keys, codec_cfg, arch


def step_bench_encode(dry: bool) -> dict:
    """Objects/s of image + photometry encoding (image codec + AION encoder + mean) at base size: fp32 vs bf16."""
    import torch

    import aion_fast
    from aion_fast.modalities import LegacySurveyImage
    from aion_fast.precision import precision_context

    device = _device(dry)
    shapes, codec, model, keys, codec_cfg, arch = _base_encode_parts(device, dry)
    batch = 2 if dry else 256
    images = shapes.legacy_images(batch).to(device)
    bands = ["DES-G", "DES-R", "DES-I", "DES-Z"]
    g = torch.Generator().manual_seed(1)
    scalars = {k: torch.randint(0, 1024, (batch, 1), generator=g).to(device) for k in keys[1:]}
    figures: dict[str, Any] = {"device": device, "batch": batch, "image_codec": codec_cfg, "architecture": arch or
                               "base"}  # fmt: skip

    def run(precision):
        with torch.inference_mode(), precision_context(precision, device):
            tokens = {"tok_image": codec.encode(LegacySurveyImage(flux=images, bands=bands)).reshape(batch, -1)}
        return aion_fast.embed(model, {**tokens, **scalars}, precision=precision)

    outs = {}
    for precision in ("fp32", "bf16"):
        outs[precision] = run(precision)
        seconds = _time(lambda p=precision: run(p), device, rounds=1 if dry else 3)
        figures[f"{precision}_objects_per_s"] = batch / seconds
    from aion_fast.precision import embedding_cosine

    figures["bf16_vs_fp32_cosine"] = embedding_cosine(outs["bf16"], outs["fp32"])
    reason = _reference_available()
    if reason:
        figures["reference"] = f"skipped: {reason}"
    else:
        figures["reference_objects_per_s"] = _reference_encode(device, dry, codec, model, images, scalars, batch)
    figures["goal"] = "bf16 >= 2000 objects/s on one H100/H200 (image + photometry)"
    return figures


def _reference_encode(device, dry, codec, model, images, scalars, batch) -> float | str:
    import tempfile

    import torch
    from aion import AION as RefAION
    from aion.codecs import ImageCodec as RefImageCodec
    from aion.modalities import LegacySurveyImage as RefImage

    try:
        with tempfile.TemporaryDirectory() as tmp:
            ref_codec = RefImageCodec(**_ref_codec_config(codec)).to(device).eval()
            ref_codec.load_state_dict(codec.state_dict(), strict=True)  # identical weights, or no figure
            model_dir = Path(tmp) / "model"
            full = RefAION(model.config.to_dict() if hasattr(model.config, "to_dict") else model.config)
            full.save_pretrained(model_dir)
            ref_model = RefAION.from_pretrained(str(model_dir)).to(device).eval()
    except Exception as exc:  # noqa: BLE001 - a figure, not a failure of aion_fast
        return f"reference could not be built: {type(exc).__name__}: {exc}"
    bands = ["DES-G", "DES-R", "DES-I", "DES-Z"]

    def run():
        with torch.no_grad():
            tokens = {"tok_image": ref_codec.encode(RefImage(flux=images, bands=bands)).reshape(batch, -1), **scalars}
            n = sum(t.shape[1] for t in tokens.values())
            return ref_model.encode(tokens, num_encoder_tokens=n).mean(dim=1)

    return batch / _time(run, device, rounds=1 if dry else 2)


def _ref_codec_config(codec) -> dict:
    import inspect

    from aion.codecs import ImageCodec as RefImageCodec

    params = inspect.signature(RefImageCodec.__init__).parameters
    cfg = getattr(codec, "config", None) or {}
    return {k: v for k, v in dict(cfg).items() if k in params}


def step_bench_train(dry: bool) -> dict:
    """Tokens/s and MFU of one bf16 training step (base size on a GPU, tiny on a dry run)."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_train as bt  # bench/bench_train.py: the batch, the parameter count

    from aion_fast.model import AION, architecture
    from aion_fast.train.config import TrainConfig
    from aion_fast.train.loop import Trainer

    device = _device(dry)
    setting = bt.SETTINGS["cpu" if dry else "cuda"]
    batch_size = 2 if dry else 32
    out_dir = Path(os.environ.get("GPU_CHECK_OUT", "/tmp")) / "train"
    config = TrainConfig.from_dict({
        "output_dir": str(out_dir), "model": {"architecture": setting["architecture"]},
        "data": {"sources": {"bench": ["unused"]}, "batch_size": batch_size},
        "train": {"max_steps": 1000, "precision": "bf16", "attention": "auto", "device": device,
                  "activation_checkpointing": setting["checkpointing"]},
        "checkpoint": {"resume": False},
    })  # fmt: skip
    torch.manual_seed(0)
    model = AION(architecture(bt.KEYS, bt.KEYS, **setting["architecture"]))
    batch = bt._batch(batch_size)
    trainer = Trainer(config, model=model, dataset=bt._RepeatedBatch(batch))
    metrics = {}

    def step():
        metrics.update(trainer.train_step(batch))

    seconds = _time(step, device, rounds=1 if dry else 3)
    tokens = metrics["num_inputs"] + metrics["num_targets"]
    enc, dec = bt._block_parameters(trainer.model)
    flops = 6 * (enc * metrics["num_inputs"] + dec * metrics["num_targets"])
    figures = {"device": device, "batch": batch_size, "tokens_per_s": tokens / seconds, "loss": metrics["loss"],
               "model_flops_per_s": flops / seconds}  # fmt: skip
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = float(os.environ.get("AION_FAST_PEAK_FLOPS", 0)) or next(
            (v for k, v in PEAK_BF16_FLOPS.items() if k in name), math.nan
        )
        figures |= {"mfu": flops / seconds / peak, "goal": "MFU >= 0.45 in bf16"}
    if not math.isfinite(metrics["loss"]):
        raise RuntimeError(f"non-finite loss {metrics['loss']}")
    return figures


def step_bench_int8(dry: bool) -> dict:
    """AION encoder embeddings/s: INT8 (and FP8 on sm_89+) through aion_fast.export.quantize vs bf16 autocast."""
    import torch

    import aion_fast
    from aion_fast.export import quantize
    from aion_fast.precision import embedding_cosine

    device = _device(dry)
    sys.path.insert(0, str(ROOT / "bench"))
    import shapes

    keys = ["tok_image", "tok_flux_g", "tok_flux_r", "tok_flux_i", "tok_flux_z"]
    from aion_fast.model import AION, architecture

    torch.manual_seed(0)
    arch = {"dim": 64, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 4} if dry else {}
    model = AION(architecture(keys, keys, **arch)).to(device).eval()
    batch = 2 if dry else 128
    tokens = {k: v.to(device) for k, v in shapes.random_tokens({"tok_image": (576, 4375), **{k: (1, 1024) for k in
                                                                keys[1:]}}, batch).items()}  # fmt: skip
    rounds = 1 if dry else 3
    ref = aion_fast.embed(model, tokens, precision="bf16")
    figures: dict[str, Any] = {"device": device, "batch": batch,
                               "bf16_objects_per_s": batch / _time(lambda: aion_fast.embed(model, tokens,
                                                                   precision="bf16"), device, rounds)}  # fmt: skip
    precisions = ["int8"]
    if device == "cuda" and torch.cuda.get_device_capability() >= (8, 9):
        precisions.append("fp8")
    for precision in precisions:
        try:
            q = quantize(model, precision=precision, calibration=[tokens], backend="torch", sensitivity=False)
            out = aion_fast.embed(q, tokens)
            figures[f"{precision}_objects_per_s"] = batch / _time(lambda q=q: aion_fast.embed(q, tokens), device,
                                                                  rounds)  # fmt: skip
            figures[f"{precision}_vs_bf16_cosine"] = embedding_cosine(out.float(), ref.float())
        except Exception as exc:  # noqa: BLE001 - a figure per precision
            figures[precision] = f"failed: {type(exc).__name__}: {exc}"
    return figures


# ---- driver ---------------------------------------------------------------------------------------------------------


def run_step(name: str, out: Path, dry: bool) -> int:
    fn = globals()[f"step_{name}"]
    start = time.perf_counter()
    record: dict[str, Any] = {"name": name, "dry_run": dry}
    try:
        record.update(status="ok", figures=fn(dry))
    except Skip as exc:
        record.update(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[-6000:],
                      traceback=traceback.format_exc()[-3000:])  # fmt: skip
    record["seconds"] = round(time.perf_counter() - start, 2)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    (out / "steps" / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"[gpu_check] {name}: {record['status']} ({record['seconds']} s) {record.get('reason', '')[:300]}",
          flush=True)  # fmt: skip
    return 0 if record["status"] != "failed" else 1


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def summarize(out: Path) -> int:
    only = [n for n in os.environ.get("GPU_CHECK_ONLY", "").split(",") if n]
    steps = []
    for name, box in STEPS:
        if only and name not in only:
            continue
        path = out / "steps" / f"{name}.json"
        if path.exists():
            record = json.loads(path.read_text())
        else:
            record = {"name": name, "status": "missing", "reason": "the step wrote no result"}
        record["time_box_s"] = box
        steps.append(record)
    summary = {"steps": steps, "failed": [s["name"] for s in steps if s["status"] not in ("ok", "skipped")]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = ["# GPU check", "", "| step | status | seconds (box) | reason / key figures |", "|---|---|---|---|"]
    for s in steps:
        detail = s.get("reason") or _fmt({k: v for k, v in (s.get("figures") or {}).items()
                                          if k not in ("probes", "tail", "log_tail")})  # fmt: skip
        detail = detail.replace("|", "/").replace("\n", " ")[:400]
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '-')} ({s['time_box_s']}) | {detail} |")
    probes = next((s.get("figures", {}).get("probes") for s in steps if s["name"] == "op_probes"), None)
    if probes:
        lines += ["", "| op | bit-equal | max abs error | GB/s | of copy |", "|---|---|---|---|---|"]
        for p in probes:
            lines.append(f"| {p['op']} | {_fmt(p.get('bit_equal_fraction', '-'))} | {_fmt(p.get('max_abs_error', '-'))}"
                         f" | {_fmt(p.get('gb_per_s', '-'))} | {_fmt(p.get('fraction_of_copy', '-'))} |")  # fmt: skip
    lines += ["", f"failed: {', '.join(summary['failed']) or 'none'}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if summary["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="steps of scripts/gpu_check.sh")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--step", choices=[name for name, _ in STEPS])
    parser.add_argument("--summarize", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{name} {box}" for name, box in STEPS))
        return 0
    if args.out is None:
        parser.error("--out is required")
    os.environ["GPU_CHECK_OUT"] = str(args.out)
    if args.summarize:
        return summarize(args.out)
    if args.step:
        return run_step(args.step, args.out, args.dry_run)
    parser.error("give --list, --step or --summarize")
    return 2


if __name__ == "__main__":
    sys.exit(main())
