"""Codec (tokenizer) training: losses by hand, training on the bundled MMU sample, hub-layout output, scalar CDF fits,
and the errors on bad inputs. Tiny codec configurations keep the whole file to a few tens of seconds on 2 cores."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aion_fast import modalities as m
from aion_fast.codecs import CodecManager
from aion_fast.codecs.image import ImageCodec
from aion_fast.codecs.spectrum import SpectrumCodec
from aion_fast.data.formats import open_source
from aion_fast.data.mmu import selection_of
from aion_fast.train import codec_training as ct
from aion_fast.train.config import CodecTrainConfig
from aion_fast.train.engine import learning_rate_factor

SAMPLE = ct.sample_files()
#: A small image codec: 3 FSQ channels of 5 levels (125 codes), 576 tokens, width 16, 8 projection channels.
TINY_IMAGE = {"quantizer_levels": [5, 5, 5], "embedding_dim": 3, "hidden_dims": 16, "multisurvey_projection_dims": 8,
              "num_consecutive": 1}  # fmt: skip
#: A small spectrum codec: 2 ConvNeXt stages on a 1088-point grid (3500-10457 Å at 6.4 Å), 136 LFQ tokens, mask head.
TINY_SPECTRUM = {"encoder_depths": [1, 1], "encoder_dims": [8, 16], "decoder_depths": [1, 1], "decoder_dims": [8, 2],
                 "latent_channels": 16, "embedding_dim": 10, "dim": 10, "resolution": 6.4,
                 "num_pixels": 1088}  # fmt: skip


def _config(steps: int = 1000, batch_size: int = 32, **sections) -> CodecTrainConfig:
    """A codec run's settings: ``train.max_steps``, ``data.batch_size`` and any other sections."""
    values = {"train": {"max_steps": steps, **sections.pop("train", {})},
              "data": {"batch_size": batch_size, **sections.pop("data", {})}, **sections}  # fmt: skip
    return CodecTrainConfig.from_dict(values)


def _records(path, kind: str, rows: int | None = None) -> list[tuple]:
    reader = ct._read_image_records if kind == "image" else ct._read_spectrum_records
    with open_source(path) as source:
        return reader(source, selection_of(source, [kind]), 0, rows or source.num_rows)


def _image_batch(rows: int = 4) -> ct.ImageBatch:
    (batch,) = ct._collate_images(_records(SAMPLE["legacysurvey"], "image", rows))
    return batch


def _spectrum_batch() -> m.Spectrum:
    (batch,) = ct._collate_spectra(_records(SAMPLE["desi"], "spectrum"))
    return batch


@pytest.fixture(scope="module")
def trained_image():
    config = _config(6, 2, optim={"lr": 3e-3, "warmup_steps": 2})
    return ct.train_image_codec([SAMPLE["legacysurvey"]], TINY_IMAGE, config)


@pytest.fixture(scope="module")
def trained_spectrum():
    config = _config(15, 3, optim={"lr": 3e-3, "warmup_steps": 2})
    return ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config)


# ------------------------------------------------------------------------------------------------------------ losses


def test_gaussian_nll_equals_hand_computation_and_ignores_masked_pixels():
    prediction = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[1.5, 0.0], [float("nan"), 4.0]])  # the NaN sits at a masked pixel
    ivar = torch.tensor([[4.0, 0.25], [9.0, 100.0]])
    valid = torch.tensor([[True, True], [False, True]])
    # 0.5 * 4 * 0.5^2 + 0.5 * 0.25 * 2^2 + (masked) + 0.5 * 100 * 0^2 = 0.5 + 0.5 + 0 = 1.0 over 3 valid pixels
    total = ct.gaussian_nll(prediction, target, ivar, valid, reduction="sum")
    mean = ct.gaussian_nll(prediction, target, ivar, valid)
    assert total.item() == pytest.approx(1.0, rel=1e-7)
    assert mean.item() == pytest.approx(1.0 / 3.0, rel=1e-7)
    mean.backward()
    # d/dy 0.5 v (t - y)^2 / 3 = -v (t - y) / 3; zero (and finite) at the masked pixel
    expected = torch.tensor([[-4.0 * 0.5 / 3, -0.25 * -2.0 / 3], [0.0, 0.0]])
    torch.testing.assert_close(prediction.grad, expected)
    # inverse-variance weighting: doubling ivar doubles the loss
    assert ct.gaussian_nll(prediction, target, 2 * ivar, valid).item() == pytest.approx(2.0 / 3.0, rel=1e-7)


def test_mask_bce_equals_hand_computation():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0])
    bad = torch.tensor([True, False, False, True])
    valid = torch.tensor([True, True, False, True])
    terms = [math.log(2.0), math.log(1.0 + math.exp(2.0)), math.log(1.0 + math.exp(-1.0)), math.log(1 + math.exp(-3.0))]
    assert ct.mask_bce(logits, bad).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    assert ct.mask_bce(logits, bad, valid).item() == pytest.approx((terms[0] + terms[1] + terms[3]) / 3, rel=1e-6)


def test_image_training_loss_is_the_weighted_nll_of_the_codec_reconstruction():
    """The training forward (own differentiable path, straight-through FSQ) scores the reconstruction the inference
    path decode(encode(x)) returns, against the clipped cut-out, weighted by ivar over good pixels only."""
    codec = ImageCodec(**TINY_IMAGE)
    batch = _image_batch()
    good = batch.good.clone()
    good[:, 1, 40:60, 30:70] = False  # masked pixels keep their (non-zero) ivar: only the mask excludes them
    batch = ct.ImageBatch(batch.flux, batch.ivar, good, batch.bands)
    assert bool((batch.ivar[~good] > 0).all())
    with torch.no_grad():
        terms = ct.image_codec_losses(codec, [batch])
        doubled = ct.image_codec_losses(codec, [ct.ImageBatch(batch.flux, 2 * batch.ivar, batch.good, batch.bands)])
    image = m.LegacySurveyImage(flux=batch.flux, bands=batch.bands)
    reconstruction = codec.decode(codec.encode(image), bands=batch.bands).flux
    bounds = torch.tensor([m.BAND_CLAMP_MAX[b] for b in batch.bands]).view(-1, 1, 1)
    residual = torch.clamp(batch.flux, -bounds, bounds) - reconstruction
    expected = (0.5 * batch.ivar * residual**2)[batch.good].sum() / batch.good.sum()
    assert terms["nll"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert doubled["nll"].item() == pytest.approx(2 * terms["nll"].item(), rel=1e-6)


def test_spectrum_flux_nll_is_scored_on_native_wavelengths_like_decode():
    torch.manual_seed(0)
    codec = SpectrumCodec(**TINY_SPECTRUM)
    spectrum = _spectrum_batch()
    with torch.no_grad():
        terms = ct.spectrum_codec_losses(codec, [spectrum])
    decoded = codec.decode(codec.encode(spectrum), wavelength=spectrum.wavelength)
    grid = codec.latent_grid.wavelength
    good = ~spectrum.mask & (spectrum.wavelength >= grid[0]) & (spectrum.wavelength <= grid[-1])
    expected = (0.5 * spectrum.ivar * (spectrum.flux - decoded.flux) ** 2)[good].sum() / good.sum()
    assert terms["flux_nll"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert terms["mask_bce"].item() > 0 and terms["commitment"].item() > 0
    quantizer = codec.quantizer.losses(codec.encode_latents(codec.preprocess(spectrum)).latents, channel_first=True)
    assert terms["quantizer_loss"].item() == pytest.approx(quantizer["loss"].item(), rel=1e-4, abs=1e-6)
    total = terms["flux_nll"] + terms["mask_bce"] + terms["quantizer_loss"]
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------------- training


def test_image_codec_training_decreases_the_loss(trained_image):
    codec, history = trained_image
    losses = [record["nll"] for record in history]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2]), losses
    assert not codec.training


def test_spectrum_codec_training_decreases_the_loss(trained_spectrum):
    _, history = trained_spectrum
    losses = [record["loss"] for record in history]
    assert np.mean(losses[-3:]) < 0.95 * np.mean(losses[:3]), losses
    assert history[0]["lr"] < history[1]["lr"]  # warm-up


def test_learning_rate_schedule_warms_up_then_follows_a_cosine():
    """The codec run's schedule is the shared one (aion_fast.train.engine), read from its optim section."""
    optim = _config(10, optim={"warmup_steps": 2, "min_lr_ratio": 0.1}).optim
    factors = [
        learning_rate_factor(step, optim.warmup_steps, 10, optim.min_lr_ratio, optim.schedule) for step in range(10)
    ]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[2:], factors[3:]))
    assert learning_rate_factor(10, optim.warmup_steps, 10, optim.min_lr_ratio, optim.schedule) == pytest.approx(0.1)
    assert learning_rate_factor(5, 0, 10, 0.0, _config(optim={"schedule": "constant"}).optim.schedule) == 1.0


def test_training_is_deterministic_given_the_seed():
    config = _config(3, 2, optim={"lr": 3e-3}, train={"seed": 7})
    first, history_a = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config)
    second, history_b = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config)
    assert [r["loss"] for r in history_a] == [r["loss"] for r in history_b]
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_bf16_autocast_step_runs():
    config = _config(1, 3, train={"precision": "bf16"})
    _, history = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config)
    assert math.isfinite(history[0]["loss"])


def test_written_codecs_load_through_the_registry_and_encode_identically(trained_image, trained_spectrum, tmp_path):
    image_codec, spectrum_codec = trained_image[0], trained_spectrum[0]
    folders = ct.save_codecs(tmp_path, [(image_codec, m.LegacySurveyImage), (spectrum_codec, m.DESISpectrum)])
    assert [f.relative_to(tmp_path).as_posix() for f in folders] == ["codecs/image", "codecs/spectrum"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codecs"]  # no staging folder left behind
    assert json.loads((tmp_path / "codecs/image/config.json").read_text())["hidden_dims"] == 16
    manager = CodecManager(repo=tmp_path)
    batch = _image_batch(8)
    image = m.LegacySurveyImage(flux=batch.flux, bands=batch.bands)
    spectrum = _spectrum_batch()
    assert torch.equal(manager.encode(image)["tok_image"], image_codec.encode(image))
    assert torch.equal(manager.encode(spectrum)["tok_spectrum_desi"], spectrum_codec.encode(spectrum))
    # re-writing replaces the folder atomically
    ct.save_codecs(tmp_path, [(image_codec, m.LegacySurveyImage)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codecs"]


def test_resumed_run_continues_with_the_uninterrupted_losses_and_weights(tmp_path):
    """Checkpoints at steps 2 and 4 of a 6-step run (3 spectra read one row at a time, shuffle buffers of 2: step 2
    stops inside a buffer, step 4 at its end); a run resumed from either computes the uninterrupted run's remaining
    losses, gradient norms and learning rates, and ends on the same weights, bit for bit (CPU, deterministic)."""
    config = _config(6, 2, data={"read_rows": 1, "shuffle_rows": 2}, optim={"lr": 3e-3, "warmup_steps": 2},
                     checkpoint={"every_steps": 2, "keep_last": 3})  # fmt: skip
    reference, history = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config, checkpoint_dir=tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").glob("step_*")) == [f"step_{s:08d}" for s in (2, 4, 6)]
    for step in (2, 4):
        folder = tmp_path / f"resumed-{step}"
        shutil.copytree(tmp_path / "a" / f"step_{step:08d}", folder / f"step_{step:08d}")
        codec, after = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config, checkpoint_dir=folder)
        assert [r["step"] for r in after] == list(range(step + 1, 7))
        for key in ("loss", "flux_nll", "mask_bce", "grad_norm", "lr"):
            assert [r[key] for r in after] == [r[key] for r in history[step:]], (step, key)
        for (name, a), (_, b) in zip(reference.state_dict().items(), codec.state_dict().items()):
            assert torch.equal(a, b), (step, name)
    # A run whose newest checkpoint is the last step has nothing left to do; resume=false starts afresh.
    _, nothing = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, config, checkpoint_dir=tmp_path / "a")
    assert nothing == []
    fresh = config.replace(checkpoint={"resume": False}, train={"max_steps": 2})
    _, again = ct.train_spectrum_codec([SAMPLE["desi"]], TINY_SPECTRUM, fresh, checkpoint_dir=tmp_path / "a")
    assert [r["loss"] for r in again] == [r["loss"] for r in history[:2]]


def test_codec_training_reads_mmu_parquet_shards_as_it_reads_hdf5(tmp_path):
    """Legacy Survey images and DESI spectra written as MMU's build scripts (HDF5) and its hub builders (Parquet)
    give the same training records (crop, band order, weights, masks), and a codec trains from the Parquet shard."""
    from tests.data_tests.mmu_writers import write_desi, write_hf_parquet, write_legacysurvey

    images = write_legacysurvey(tmp_path / "mmu", n=4)
    spectra = write_desi(tmp_path / "mmu", n=3)
    for written, survey, kind in ((images, "legacysurvey", "image"), (spectra, "desi", "spectrum")):
        parquet = write_hf_parquet(tmp_path / "hub" / survey, survey, written.columns)
        from_hdf5, from_parquet = _records(written.path, kind), _records(parquet.path, kind)
        assert len(from_hdf5) == len(from_parquet) == len(written.columns["object_id"])
        for a, b in zip(from_hdf5, from_parquet):
            assert a[0] == b[0]
            for x, y in zip(a[1:], b[1:]):
                assert torch.equal(x, y), kind
    parquet_images = write_hf_parquet(tmp_path / "hub2", "legacysurvey", images.columns).path
    (batch,) = ct._collate_images(_records(parquet_images, "image"))
    assert batch.bands == ["DES-G", "DES-R", "DES-I", "DES-Z"] and batch.flux.shape == (4, 4, 96, 96)
    # object 3's star halo (image_mask False from stamp row 76, crop row 68) is not scored; the rest is
    assert not bool(batch.good[3, :, 68:].any()) and bool(batch.good[3, :, :68].all())
    assert bool((batch.ivar[3, :, 68:] == 0).all()) and bool((batch.ivar[3, :, :68] > 0).all())
    codec, history = ct.train_image_codec([parquet_images], TINY_IMAGE, _config(2, 2))
    assert len(history) == 2 and all(math.isfinite(r["nll"]) for r in history) and not codec.training


# --------------------------------------------------------------------------------------------------------- scalars


def _scalar_file(path: Path, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns = {
        "FLUX_G": np.exp(rng.normal(1.0, 1.5, n)).astype(np.float32),
        "EBV": rng.uniform(0.0, 0.2, n).astype(np.float32),
        "coeff": (rng.normal(size=(n, 110)) * 50).astype(np.float32),
    }
    columns["FLUX_G"][::97] = np.nan  # missing measurements are skipped
    with h5py.File(path, "w") as f:
        for name, values in columns.items():
            f.create_dataset(name, data=values, chunks=(min(n, 512), *values.shape[1:]))
        f.create_dataset("object_id", data=np.arange(n), chunks=(min(n, 512),))
    return columns


def test_scalar_fit_quantiles_match_numpy_within_the_reservoir_error(tmp_path):
    columns = _scalar_file(tmp_path / "scalars.hdf5", 20_000)
    specs = {"FLUX_G": {}, "LegacySurveyEBV": {}, "Z": {}}
    fitted = ct.fit_scalar_codecs([tmp_path / "scalars.hdf5"], specs, {"codebook_size": 128, "reservoir_size": 3000},
                                  read_rows=1000, seed=3)  # fmt: skip
    assert set(fitted) == {m.LegacySurveyFluxG, m.LegacySurveyEBV, m.Z}
    bound = ct.reservoir_quantile_error(3000)  # 0.049 at failure probability 1e-6
    levels = np.linspace(0, 1, 128)
    for modality, values in ((m.LegacySurveyFluxG, np.log(np.maximum(columns["FLUX_G"], np.exp(-3)))),
                             (m.LegacySurveyEBV, columns["EBV"])):  # fmt: skip
        quantizer = fitted[modality].quantizer
        data = np.sort(values[np.isfinite(values)].astype(np.float64))
        assert quantizer.num_samples == data.size
        codebook = quantizer.codebook.double().numpy()  # in the transformed (log) space for fluxes
        cdf_at_codes = np.searchsorted(data, codebook, side="right") / data.size
        error = np.abs(cdf_at_codes[1:-1] - levels[1:-1]).max()
        assert error <= bound, (modality.__name__, error, bound)
        assert 0.0 < error  # a sample, not the data itself
        numpy_quantiles = np.quantile(data, levels)
        assert np.abs(codebook - numpy_quantiles).max() < 0.2 * (data[-1] - data[0])


def test_short_streams_fill_the_reservoir_with_the_data_quantiles(tmp_path):
    """Fewer values than reservoir slots: the codebook is numpy's quantiles of the data (not pulled to the default)."""
    columns = _scalar_file(tmp_path / "few.hdf5", 300, seed=1)
    k = 63 * 5 + 1  # 64 codes land on reservoir slots exactly
    specs = {"FLUX_G": {}, "GaiaXpBp": {"compression_fns": ["arcsinh"], "decompression_fns": ["sinh"],
                                        "num_quantizers": 55}}  # fmt: skip
    fitted = ct.fit_scalar_codecs([tmp_path / "few.hdf5"], specs, {"codebook_size": 64, "reservoir_size": k})
    flux = columns["FLUX_G"][np.isfinite(columns["FLUX_G"])]
    expected = np.quantile(np.log(np.maximum(flux, np.exp(-3))).astype(np.float64), np.linspace(0, 1, 64))
    np.testing.assert_allclose(fitted[m.LegacySurveyFluxG].quantizer.codebook.numpy(), expected, rtol=0, atol=1e-5)
    xp = fitted[m.GaiaXpBp].quantizer.quantizers[7].codebook.numpy()
    expected_xp = np.quantile(np.arcsinh(columns["coeff"][:, 7].astype(np.float64)), np.linspace(0, 1, 64))
    np.testing.assert_allclose(xp, expected_xp, rtol=0, atol=1e-5)
    folders = ct.save_codecs(tmp_path / "out", [(codec, modality) for modality, codec in fitted.items()])
    assert {f.name for f in folders} == {"FLUX_G", "bp_coefficients"}
    values = torch.from_numpy(flux[:16])
    loaded = CodecManager(repo=tmp_path / "out").encode(m.LegacySurveyFluxG(value=values))["tok_flux_g"]
    assert torch.equal(loaded, fitted[m.LegacySurveyFluxG].encode(m.LegacySurveyFluxG(value=values)))


# ---------------------------------------------------------------------------------------------------------- errors


def _image_file(path: Path, rows: int = 2, drop: str | None = None, bands: list[bytes] | None = None) -> Path:
    with h5py.File(SAMPLE["legacysurvey"], "r") as source, h5py.File(path, "w") as out:
        for name in ("image_array", "image_ivar", "image_mask", "image_band", "object_id"):
            if name == drop:
                continue
            data = source[name][:rows]
            if name == "image_band" and bands is not None:
                data = np.array([bands] * rows)
            out.create_dataset(name, data=data)
    return path


def test_missing_field_wrong_bands_and_empty_data_raise_clear_errors(tmp_path):
    config = _config(1, 2)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['image_ivar'\]"):
        ct.train_image_codec([_image_file(tmp_path / "noivar.hdf5", drop="image_ivar")], TINY_IMAGE, config)
    with pytest.raises(ValueError, match=r"spectrum_flux.*desi/ or sdss/"):
        ct.train_spectrum_codec([SAMPLE["legacysurvey"]], TINY_SPECTRUM, config)
    wrong = _image_file(tmp_path / "bands.hdf5", bands=[b"des-g", b"des-r", b"des-i", b"hsc-z"])
    with pytest.raises(ValueError, match=r"row 0: image_band \['DES-G', 'DES-R', 'DES-I', 'HSC-Z'\]"):
        ct.train_image_codec([wrong], TINY_IMAGE, config)
    with pytest.raises(ValueError, match="no rows"):
        ct.train_image_codec([_image_file(tmp_path / "empty.hdf5", rows=0)], TINY_IMAGE, config)
    with pytest.raises(ValueError, match="no input files"):
        ct.train_image_codec([], TINY_IMAGE, config)
    with pytest.raises(ValueError, match="no finite values of .*LegacySurveyFluxG \\(column FLUX_G\\)"):
        ct.fit_scalar_codecs([SAMPLE["desi"]], {"FLUX_G": {"codebook_size": 16, "reservoir_size": 16}})
    with pytest.raises(ValueError, match="'image' is not a scalar modality"):
        ct.fit_scalar_codecs([SAMPLE["desi"]], {"image": {}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stpes'\] in section 'train'"):
        CodecTrainConfig.from_dict({"train": {"stpes": 3}})
    with pytest.raises(ValueError, match="optim.lr must be > 0"):
        _config(optim={"lr": 0})
    with pytest.raises(ValueError, match="does not fit ImageCodec"):
        ct.train_image_codec([SAMPLE["legacysurvey"]], {**TINY_IMAGE, "hidden_dim": 8}, config)


def test_bundled_codec_configs_load_with_the_shared_loader():
    root = Path(__file__).resolve().parents[2] / "configs"
    image = ct.load_config(root / "image-codec.yaml", "image")
    assert (image.train.max_steps, image.data.batch_size, image.optim.lr, image.optim.warmup_steps) == (
        400_000, 256, 5e-4, 1000)  # fmt: skip
    assert image.codec["quantizer_levels"] == [7, 5, 5, 5, 5] and image.checkpoint.resume
    spectrum = ct.load_config(root / "spectrum-codec.yaml", "spectrum", {"train.max_steps": 7})
    assert (spectrum.optim.schedule, spectrum.optim.weight_decay, spectrum.train.max_steps) == ("constant", 0.1, 7)
    assert spectrum.loss.mask_weight == 1.0 and spectrum.codec["decoder_dims"][-1] == 2
    scalar = ct.load_config(root / "scalar-codecs.yaml", "scalar")
    assert len(scalar.codecs) == 34 and scalar.defaults == {"codebook_size": 1024, "reservoir_size": 1_000_000}
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['training'\]"):
        CodecTrainConfig.from_dict({"training": {"steps": 3}})  # the old flat layout: refused, known sections named
    with pytest.raises(ValueError, match="optim.schedule='linear'"):
        _config(optim={"schedule": "linear"})


def _train_codec_cli(argv: list[str]) -> int:
    """Runs ``aion-fast train-codec`` through its own sub-parser (the command ``aion_fast.cli`` registers)."""
    import argparse

    from aion_fast.train import train_codec

    parser = argparse.ArgumentParser(prog="aion-fast")
    train_codec.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_trains_a_spectrum_codec_from_a_yaml(tmp_path, capsys):
    import yaml

    from aion_fast.cli import COMMAND_MODULES

    assert "aion_fast.train.train_codec" in COMMAND_MODULES
    config = tmp_path / "spectrum.yaml"
    config.write_text(yaml.safe_dump({"codec": TINY_SPECTRUM, "data": {"batch_size": 3}, "train": {"log_every": 1}}))
    code = _train_codec_cli(["train-codec", "spectrum", "--data", str(SAMPLE["desi"]), "--config", str(config),
                             "--output", str(tmp_path / "out"), "--steps", "2"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("\n{") + 1 :])  # progress lines, then the JSON summary
    assert summary["steps"] == 2
    log = (tmp_path / "out" / "train-codec-spectrum.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2]
    codec = CodecManager(repo=tmp_path / "out").codec(m.DESISpectrum)
    assert codec.num_tokens == 1 + 1088 // 8
    # Re-run with more steps: it resumes from OUTPUT/checkpoints/spectrum-codec/ and appends to the log.
    assert (tmp_path / "out" / "checkpoints" / "spectrum-codec" / "step_00000002").is_dir()
    code = _train_codec_cli(["train-codec", "spectrum", "--data", str(SAMPLE["desi"]), "--config", str(config),
                             "--output", str(tmp_path / "out"), "--set", "train.max_steps=3"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out[out.index("\n{") + 1 :])["steps_run"] == 1
    log = (tmp_path / "out" / "train-codec-spectrum.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3]
    # step 3 follows this run's schedule (cosine over 3 steps: 0.5 (1 + cos(2 pi / 3)) = 0.25 of the peak rate)
    assert json.loads(log[-1])["lr"] == pytest.approx(5e-4 * 0.25, rel=1e-12)
    bad = ["train-codec", "image", "--data", str(SAMPLE["desi"]), "--config", str(config), "--output", str(tmp_path)]
    assert _train_codec_cli(bad) == 2
    assert "missing column(s)" in capsys.readouterr().err
