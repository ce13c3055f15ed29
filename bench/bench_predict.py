"""Objects/s of redshift prediction at base size: ``aion-fast predict``'s exact posterior vs the reference's sampling.

Both sides start from the same g/r/i/z photometry tokens of the same ``AION_FAST_BENCH_PREDICT_OBJECTS`` objects
(default 8) on identical random weights of the AION-1-B architecture (the speed does not depend on training), in the
same process:

* ``aion_fast``: :class:`aion_fast.jobs.predict.Predictor` as the job runs it per batch: one encoder + decoder pass
  per object, softmax over the Z codec's 1024 bins, and the summary columns (mean, median, mode, std, 16/84 and
  2.5/97.5 percentiles) — the exact posterior;
* ``reference``: the reference's own ROAR path (``aion.fourm.generate.GenerationSampler``) drawing 50 redshift
  samples per object, chains batched B x 50 — what a user of the reference runs to get a posterior.

Throughput is objects per second.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import shapes
import torch
from aion import AION as RefAION
from aion import codecs as ref_codecs
from aion import modalities as ref_m
from conftest import run_timed

from aion_fast.jobs.predict import PredictOptions, Predictor, posterior_summary
from aion_fast.modalities import Z
from aion_fast.model import architecture

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.generate.reference_roar import reference_roar  # noqa: E402

DOMAINS = {"tok_flux_g": (1, 1024), "tok_flux_r": (1, 1024), "tok_flux_i": (1, 1024), "tok_flux_z": (1, 1024)}
NUM_SAMPLES = 50
OBJECTS = int(os.environ.get("AION_FAST_BENCH_PREDICT_OBJECTS", "8"))
IMPLS = ["reference", "aion_fast"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, bench_device):
    torch.manual_seed(0)
    keys = sorted([*DOMAINS, "tok_z"])
    ref = RefAION(architecture(keys, keys)).eval()
    root = tmp_path_factory.mktemp("aion_base_predict")
    ref.save_pretrained(root)
    ref_codecs.GridScalarCodec("Z", 1024).save_pretrained(root, modality=ref_m.Z)
    predictor = Predictor(root, Z, PredictOptions(target="redshift", device=bench_device))
    return ref.to(bench_device), predictor


@pytest.mark.parametrize("impl", IMPLS)
def test_redshift_prediction(benchmark, record, bench_device, models, impl):
    tokens = {k: v.to(bench_device) for k, v in shapes.random_tokens(DOMAINS, OBJECTS, seed=3).items()}
    benchmark.group = f"redshift posterior at base size, {OBJECTS} objects (exact vs {NUM_SAMPLES} ROAR draws)"
    record(impl, OBJECTS, unit="objects")
    ref, predictor = models
    if impl == "reference":
        fn = lambda: reference_roar(ref, tokens, "tok_z", 1, NUM_SAMPLES, [1], temperature=1.0, seed=0)  # noqa: E731
    else:

        def fn():
            probs = predictor.posterior(tokens, None)
            return probs, posterior_summary(probs, predictor.bin_values)

    with torch.inference_mode():
        out = run_timed(benchmark, fn, bench_device, rounds=3)
    if impl == "reference":
        assert out.shape == (OBJECTS, NUM_SAMPLES, 1)
    else:
        assert out[0].shape == (OBJECTS, 1024) and out[1]["median"].shape == (OBJECTS,)
