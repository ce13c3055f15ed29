"""Objects/s of ``aion-fast encode`` vs the reference README's loop on the same MMU files and the same weights.

Two inputs (``input`` parameter), both written by :mod:`aion_fast.data.make_sample`:

* ``sample``: the bundled sample (27 objects: 8 Legacy Survey image + 12 scalars, 3 real DESI spectra, 16 Gaia XP
  + 4 scalars), start-up dominated;
* ``scale50``: the same recipe at ``--scale 50`` (1350 objects: 400 Legacy Survey, 150 DESI, 800 Gaia), written
  once per session into a temporary folder: the steady-state row.

**What is timed, on both sides alike**: loading the checkpoint (transformer + every codec used) and then reading,
tokenizing and embedding every object of every file, batch 64, one process, the demo checkpoint's untrained
weights. ``aion-fast encode`` (``run_encode``, into a fresh output folder each round) also writes Parquet, the
errors ledger and the manifest, and hashes the inputs (SHA-256, overlapped with the encoding); the checkpoint's
weight digest is cached across runs under ``$AION_FAST_CACHE_DIR`` (set to a temporary folder here), so after the
warm-up round it costs a ``stat`` per weight file, as on any re-run of a command. The reference loop is written the
way polymathic-aion's README does it: per batch, one codec ``encode`` per modality, ``AION.encode(tokens,
num_encoder_tokens=all)`` and ``.mean(1)``, under ``torch.no_grad``. The reference cannot load codecs from a local
directory (a defect of 0.0.2), so its codec objects are built from the checkpoint's ``config.json`` and loaded
with the same safetensors weights. Neither input has a missing modality, so the reference's mean is not skewed by
padding here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from conftest import run_timed

from aion_fast.data.make_sample import write_sample
from aion_fast.data.mmu import SCALAR_COLUMNS
from aion_fast.demo import build_untrained_checkpoint
from aion_fast.jobs.encode import EncodeOptions, run_encode

SAMPLE = Path(__file__).resolve().parents[1] / "aion_fast" / "data" / "sample" / "mmu"
SURVEYS = ("legacysurvey", "desi", "gaia")
BATCH = 64
#: input name -> (make_sample scale, objects, timed rounds)
INPUTS = {"sample": (1, 27, 3), "scale50": (50, 1350, 2)}


def _files(root: Path) -> list[str]:
    return [f"{root}/{survey}/healpix=0/001-of-001.hdf5" for survey in SURVEYS]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_untrained_checkpoint(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def input_files(request, tmp_path_factory) -> tuple[str, list[str]]:
    """``(input name, its three MMU files)``."""
    scale = INPUTS[request.param][0]
    if scale == 1:
        return request.param, _files(SAMPLE)
    root = tmp_path_factory.mktemp(f"mmu_scale{scale}")
    write_sample(root, scale=scale)
    return request.param, _files(root)


def _reference_models(checkpoint):
    from aion import AION as RefAION
    from aion import codecs as ref_codecs
    from aion import modalities as ref_m
    from safetensors.torch import load_file

    model = RefAION.from_pretrained(str(checkpoint)).eval()
    codecs = {}
    for folder in sorted((checkpoint / "codecs").iterdir()):
        config = json.loads((folder / "config.json").read_text())
        name = config.pop("codec_class", None) or config.pop("_class_name", None)
        classes = {"image": "ImageCodec", "spectrum": "SpectrumCodec"}
        cls_name = name or classes.get(folder.name)
        if cls_name is None:
            from aion_fast.codecs.registry import codec_class_name
            from aion_fast.modalities import ScalarModalities

            cls_name = codec_class_name(ScalarModalities[folder.name])
        codec = getattr(ref_codecs, cls_name)(**config)
        weights = load_file(folder / "model.safetensors")
        codec.load_state_dict(weights, strict=False)
        codecs[folder.name] = codec.eval()
    return model, codecs, ref_m


def _reference_loop(model, codecs, ref_m, files):
    """The README recipe over every file, BATCH objects at a time."""
    vectors = []
    for path in files:
        with h5py.File(path, "r") as f:
            n = f[next(iter(f.keys()))].shape[0]
            for start in range(0, n, BATCH):
                rows = slice(start, min(start + BATCH, n))
                inputs = []
                if "image_array" in f:
                    flux = torch.from_numpy(f["image_array"][rows])
                    inputs.append(
                        ("image", ref_m.LegacySurveyImage(flux=flux, bands=["DES-G", "DES-R", "DES-I", "DES-Z"]))
                    )
                if "spectrum_flux" in f:
                    names = {"flux": "flux", "ivar": "ivar", "mask": "mask", "wavelength": "lambda"}
                    spec = {k: torch.from_numpy(f[f"spectrum_{c}"][rows]) for k, c in names.items()}
                    inputs.append(("spectrum", ref_m.DESISpectrum(**spec)))
                for column in SCALAR_COLUMNS:
                    if column in f and column in codecs:
                        cls = getattr(ref_m, SCALAR_COLUMNS[column][0].__name__)
                        inputs.append((column, cls(value=torch.from_numpy(f[column][rows]))))
                if "coeff" in f:
                    coeff = torch.from_numpy(f["coeff"][rows])
                    inputs += [("bp_coefficients", ref_m.GaiaXpBp(value=coeff[:, :55])),
                               ("rp_coefficients", ref_m.GaiaXpRp(value=coeff[:, 55:]))]  # fmt: skip
                tokens = {m.token_key: codecs[name].encode(m) for name, m in inputs}
                n_tokens = sum(t.reshape(t.shape[0], -1).shape[1] for t in tokens.values())
                vectors.append(model.encode(tokens, num_encoder_tokens=n_tokens).mean(dim=1))
    return torch.cat(vectors)


@pytest.mark.parametrize("input_files", list(INPUTS), indirect=True)
@pytest.mark.parametrize("impl", ["reference", "aion_fast"])
def test_encode_job(benchmark, record, bench_device, checkpoint, input_files, tmp_path, monkeypatch, impl):
    name, files = input_files
    _, expected, rounds = INPUTS[name]
    benchmark.group = f"encode job, {name} ({expected} objects), batch {BATCH}"
    if impl == "reference":

        def fn():  # like `aion-fast encode`, the timed call loads the checkpoint and then encodes every file
            model, codecs, ref_m = _reference_models(checkpoint)
            with torch.no_grad():  # the reference README runs its loop without inference mode
                return _reference_loop(model, codecs, ref_m, files)
    else:
        monkeypatch.setenv("AION_FAST_CACHE_DIR", str(tmp_path / "cache"))
        options = EncodeOptions(model=str(checkpoint), batch_size=BATCH, device=bench_device, progress=False)

        def fn():
            shutil.rmtree(tmp_path / "out", ignore_errors=True)
            return run_encode(files, tmp_path / "out", options)

    out = run_timed(benchmark, fn, bench_device, rounds=rounds)
    objects = out.shape[0] if impl == "reference" else out["objects_encoded"]
    assert objects == expected
    record(impl, objects)
    benchmark.extra_info["input"] = name
    benchmark.extra_info["objects_per_s"] = objects / benchmark.stats.stats.median
    if impl == "aion_fast":
        benchmark.extra_info["workers"] = out["workers"]
