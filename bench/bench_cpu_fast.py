"""Base-size CPU throughput of ``precision="fast"`` vs the reference, identical weights and inputs, one run.

Run: ``python -m pytest bench/bench_cpu_fast.py -o python_files='bench_*.py' --benchmark-json=bench/results/x.json``
(``AION_FAST_BENCH_BATCH`` overrides the batch, default ``shapes.BATCH["cpu"]``). Implementations: ``reference``
(polymathic-aion under ``torch.inference_mode``), ``exact`` (aion_fast fp32, tokens equal to the reference's) and
``fast``. Every test first measures the sgemm peak (best 2048^3 float32 product) and records it in ``extra_info``
with the achieved GFLOP/s of the timed call (convolution and matrix-product FLOPs counted once by
``torch.utils.flop_counter``): this machine is shared, and only ratios within one run and the fraction of the peak
measured next to them mean anything. End to end = image codec + spectrum codec + 3 photometry tokens (the same
token ids on both sides: the scalar codecs cost microseconds) -> mean embedding of the base-size transformer.
"""

from __future__ import annotations

import os
import time

import pytest
import shapes
import torch
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import AION as RefAION
from aion import codecs as ref_codecs
from aion import modalities as ref_modalities
from conftest import run_timed
from profile_cpu import sgemm_peak

import aion_fast
from aion_fast import modalities as m
from aion_fast.codecs import ImageCodec, SpectrumCodec
from aion_fast.model import AION, architecture
from aion_fast.precision import precision_context

IMPLS = ["reference", "exact", "fast"]
BATCH = int(os.environ.get("AION_FAST_BENCH_BATCH", shapes.BATCH["cpu"]))
FLUX_KEYS = ["tok_flux_g", "tok_flux_r", "tok_flux_z"]
DOMAINS = ["tok_image", "tok_spectrum_desi", *FLUX_KEYS]


_FLOPS: dict[str, int] = {}  # per benchmark group: the same network FLOPs for every implementation


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def codecs(tmp_path_factory):
    """Reference and aion_fast image and spectrum codecs on the same random base-size weights."""
    torch.manual_seed(0)
    ref_image = ref_codecs.ImageCodec(**shapes.IMAGE_CODEC).eval()
    ref_spectrum = ref_codecs.SpectrumCodec(**shapes.SPECTRUM_CODEC).eval()
    root = tmp_path_factory.mktemp("codecs")
    ref_image.save_pretrained(root / "image", modality=ref_modalities.LegacySurveyImage)
    ref_spectrum.save_pretrained(root / "spectrum", modality=ref_modalities.DESISpectrum)
    image = ImageCodec.from_pretrained(root / "image", modality=m.LegacySurveyImage)
    spectrum = SpectrumCodec.from_pretrained(root / "spectrum", modality=m.DESISpectrum)
    return {"ref_image": ref_image, "ref_spectrum": ref_spectrum, "image": image, "spectrum": spectrum}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    ref = RefAION(architecture(DOMAINS, DOMAINS)).eval()
    root = tmp_path_factory.mktemp("aion_base")
    ref.save_pretrained(root)
    return ref, AION.from_pretrained(root, encoder_only=True).eval()


def _inputs():
    flux = shapes.legacy_images(BATCH)
    spectra = shapes.desi_spectra(BATCH)
    photometry = {k: torch.randint(0, 1024, (BATCH, 1), generator=torch.Generator().manual_seed(i))
                  for i, k in enumerate(FLUX_KEYS)}  # fmt: skip
    return flux, spectra, photometry


def _encoders(codecs, impl):
    """``(image_fn, spectrum_fn)``: flux -> tokens and spectra dict -> tokens for one implementation."""
    if impl == "reference":  # it clips and rescales its input in place: a fresh copy each call
        image = lambda flux: codecs["ref_image"].encode(  # noqa: E731
            ref_modalities.LegacySurveyImage(flux=flux.clone(), bands=shapes.LEGACY_BANDS)
        )
        spectrum = lambda s: codecs["ref_spectrum"].encode(ref_modalities.DESISpectrum(**s))  # noqa: E731
        return image, spectrum
    precision = "fp32" if impl == "exact" else "fast"

    def image(flux):
        with precision_context(precision, "cpu"):
            return codecs["image"].encode(m.LegacySurveyImage(flux=flux, bands=shapes.LEGACY_BANDS))

    def spectrum(s):
        with precision_context(precision, "cpu"):
            return codecs["spectrum"].encode(m.DESISpectrum(**s))

    return image, spectrum


def _run(benchmark, record, impl, fn, what: str, exact_fn, rounds: int = 2):
    """Times ``fn``; FLOPs are counted on ``exact_fn`` (the fast path's fused oneDNN calls have no FLOP formula)."""
    record(impl, BATCH)
    benchmark.group = f"{what} base B={BATCH}"
    with torch.inference_mode():
        if what not in _FLOPS:
            _FLOPS[what] = counted_flops(exact_fn)
        flops = _FLOPS[what]
        peak = sgemm_peak(repeats=4)
        out = run_timed(benchmark, fn, "cpu", rounds=rounds)
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update({"sgemm_gflops": round(peak, 1), "gflop": round(flops / 1e9, 1),
                                 "gflops": round(flops / seconds / 1e9, 1),
                                 "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3)})  # fmt: skip
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_image_codec_encode(benchmark, record, codecs, impl):
    flux, _, _ = _inputs()
    image, _ = _encoders(codecs, impl)
    exact, _ = _encoders(codecs, "exact")
    tokens = _run(benchmark, record, impl, lambda: image(flux), "ImageCodec.encode 4x160x160", lambda: exact(flux))
    assert tokens.shape == (BATCH, shapes.IMAGE_TOKENS)


@pytest.mark.parametrize("impl", IMPLS)
def test_spectrum_codec_encode(benchmark, record, codecs, impl):
    _, spectra, _ = _inputs()
    _, spectrum = _encoders(codecs, impl)
    _, exact = _encoders(codecs, "exact")
    what = f"SpectrumCodec.encode {shapes.DESI_PIXELS} px"
    tokens = _run(benchmark, record, impl, lambda: spectrum(spectra), what, lambda: exact(spectra))
    assert tokens.shape == (BATCH, shapes.SPECTRUM_TOKENS)


@pytest.mark.parametrize("impl", IMPLS)
def test_end_to_end_mean_embedding(benchmark, record, codecs, models, impl):
    flux, spectra, photometry = _inputs()
    ref_model, model = models

    def run(impl=impl):
        image, spectrum = _encoders(codecs, impl)
        tokens = {"tok_image": image(flux), "tok_spectrum_desi": spectrum(spectra), **photometry}
        if impl == "reference":
            n = sum(t.shape[1] for t in tokens.values())
            return ref_model.encode(tokens, num_encoder_tokens=n).mean(dim=1)
        return aion_fast.embed(model, tokens, precision="fp32" if impl == "exact" else "fast")

    what = "image+spectrum+photometry -> mean embedding"
    out = _run(benchmark, record, impl, run, what, lambda: run("exact"))
    assert out.shape == (BATCH, shapes.TRANSFORMER_BASE["dim"])


@pytest.mark.parametrize("workload", ["image", "spectrum", "end_to_end"])
def test_interleaved_ratios(benchmark, record, codecs, models, workload):
    """The three implementations called in turn, ``AION_FAST_BENCH_ROUNDS`` rounds (default 2) after a warm-up, the
    sgemm peak measured before each round: the fairest ratios a shared machine allows. Best time per implementation,
    the ratios and the peaks land in ``extra_info`` (the timed benchmark itself is one fast call)."""
    flux, spectra, photometry = _inputs()
    ref_model, model = models

    def call(impl):
        image, spectrum = _encoders(codecs, impl)
        if workload == "image":
            return image(flux)
        if workload == "spectrum":
            return spectrum(spectra)
        tokens = {"tok_image": image(flux), "tok_spectrum_desi": spectrum(spectra), **photometry}
        if impl == "reference":
            n = sum(t.shape[1] for t in tokens.values())
            return ref_model.encode(tokens, num_encoder_tokens=n).mean(dim=1)
        return aion_fast.embed(model, tokens, precision="fp32" if impl == "exact" else "fast")

    rounds = int(os.environ.get("AION_FAST_BENCH_ROUNDS", 2))
    best = dict.fromkeys(IMPLS, float("inf"))
    peaks = []
    with torch.inference_mode():
        outputs = {impl: call(impl) for impl in IMPLS}  # warm-up (packed weights, oneDNN primitives)
        for _ in range(rounds):
            peaks.append(round(sgemm_peak(repeats=4), 1))
            for impl in IMPLS:
                start = time.perf_counter()
                call(impl)
                best[impl] = min(best[impl], time.perf_counter() - start)
    record("fast", BATCH)
    benchmark.group = f"interleaved {workload} base B={BATCH}"
    with torch.inference_mode():
        benchmark.pedantic(lambda: call("fast"), rounds=1, iterations=1)
    ratios = {f"reference/{impl}": round(best["reference"] / best[impl], 3) for impl in ("exact", "fast")}
    benchmark.extra_info.update({"best_s": {k: round(v, 3) for k, v in best.items()}, **ratios,
                                 "sgemm_gflops_per_round": peaks})  # fmt: skip
    print(workload, best, ratios, peaks)
    if workload != "end_to_end":
        agreement = float((outputs["fast"] == outputs["exact"]).float().mean())
        benchmark.extra_info["fast_vs_exact_tokens"] = agreement
        assert torch.equal(outputs["exact"], outputs["reference"])
