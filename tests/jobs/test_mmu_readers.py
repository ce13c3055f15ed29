"""Each MMU schema read by aion_fast.data.mmu: fields, mask polarity, SDSS padding, Gaia coeff split, cross-matched
prefixes, and per-object issues for unusable modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aion_fast import modalities as m
from aion_fast.data.columns import SourceConflictError
from aion_fast.data.formats import open_source
from aion_fast.data.make_sample import desi_columns, gaia_columns, legacysurvey_columns, write_mmu
from aion_fast.data.mmu import prepare_rows, row_ranges, selection_of


def _parts(batch):
    return {type(p.modality).__name__: p for p in batch.parts}


def test_legacysurvey_fields_crop_band_order_and_mask_polarity(tmp_path):
    columns = legacysurvey_columns(n=5)
    shuffled, ordered = ["des-z", "des-g", "des-r", "des-i"], ["des-g", "des-r", "des-i", "des-z"]
    columns["image_band"] = np.array([shuffled] + [ordered] * 4)
    columns["image_array"][2, :, 50:60, 50:60] = np.nan  # NaN at pixels marked bad: allowed, replaced by 0
    columns["image_mask"][2, 50:60, 50:60] = False
    path = write_mmu(tmp_path / "ls.hdf5", columns, chunk_rows=2)
    with open_source(path) as source:
        assert source.num_rows == 5 and source.chunk_rows() == 2
        batch = prepare_rows(source, 0, 5, ["image", "photometry", "position"])
    parts = _parts(batch)
    image = parts["LegacySurveyImage"].modality
    assert image.bands == ["DES-G", "DES-R", "DES-I", "DES-Z"] and image.flux.shape == (5, 4, 96, 96)
    # Row 0 lists z first: its channels are reordered to g, r, i, z.
    expected0 = columns["image_array"][0][[1, 2, 3, 0], 32:128, 32:128]
    np.testing.assert_array_equal(image.flux[0].numpy(), expected0)
    np.testing.assert_array_equal(image.flux[1].numpy(), columns["image_array"][1, :, 32:128, 32:128])
    assert torch.isfinite(image.flux).all() and (image.flux[2, :, 18:28, 18:28] == 0).all()
    np.testing.assert_array_equal(parts["LegacySurveyFluxW4"].modality.value.numpy(), columns["FLUX_W4"])
    np.testing.assert_array_equal(parts["Ra"].modality.value.numpy(), columns["RA"].astype(np.float32))
    assert batch.object_id == [f"ls-synthetic-{i:04d}" for i in range(5)] and not batch.issues


def test_hsc_per_band_masks_and_five_bands(tmp_path):
    n = 3
    rng = np.random.default_rng(0)
    good = np.ones((n, 5, 160, 160), dtype=bool)
    good[1] = False  # every band of object 1 masked: skipped
    good[2, 0] = False  # one band masked: still used
    path = write_mmu(tmp_path / "hsc.hdf5", {
        "image_array": rng.normal(size=(n, 5, 160, 160)).astype(np.float32),
        "image_mask": good,
        "image_band": np.array([["hsc-g", "hsc-r", "hsc-i", "hsc-z", "hsc-y"]] * n),
        "object_id": np.arange(n), "a_g": np.full(n, 0.1, np.float32), "g_cmodel_mag": np.full(n, 21.0, np.float32),
        "i_sdssshape_shape12": np.full(n, 0.5, np.float32),
    })  # fmt: skip
    with open_source(path) as source:
        batch = prepare_rows(source, 0, n, ["image", "photometry"])
    parts = _parts(batch)
    assert isinstance(parts["HSCImage"].modality, m.HSCImage) and parts["HSCImage"].rows.tolist() == [0, 2]
    assert {"HSCAG", "HSCMagG", "HSCShape12"} <= set(parts)
    assert [(i.row, i.modality) for i in batch.issues] == [(1, "image")] and "masked" in batch.issues[0].reason


def test_desi_spectra_mask_true_is_bad(tmp_path):
    columns = desi_columns()
    path = write_mmu(tmp_path / "desi.hdf5", columns)
    with open_source(path) as source:
        batch = prepare_rows(source, 0, 3, ["spectrum"])
    spectrum = _parts(batch)["DESISpectrum"].modality
    np.testing.assert_array_equal(spectrum.mask.numpy(), columns["spectrum_mask"])
    np.testing.assert_array_equal(spectrum.wavelength.numpy(), columns["spectrum_lambda"])
    good = ~columns["spectrum_mask"]
    np.testing.assert_array_equal(spectrum.flux.numpy()[good], columns["spectrum_flux"][good])


def test_sdss_padding_removed_before_interpolation(tmp_path, demo_checkpoint):
    """A padded SDSS row tokenizes exactly like the same spectrum unpadded; rows of two lengths in one file."""
    rng = np.random.default_rng(1)
    lengths = [3841, 3900, 3841]
    width = 4001
    flux = np.zeros((3, width), np.float32)
    ivar = np.zeros((3, width), np.float32)
    lam = np.full((3, width), -1.0, np.float32)
    for row, n in enumerate(lengths):
        lam[row, :n] = 10 ** (3.58 + 1e-4 * np.arange(n))
        flux[row, :n] = 5 + rng.normal(size=n)
        ivar[row, :n] = 1.0
    columns = {"spectrum_flux": flux, "spectrum_ivar": ivar, "spectrum_lambda": lam,
               "spectrum_mask": np.zeros((3, width), bool), "object_id": np.arange(3)}  # fmt: skip
    path = write_mmu(tmp_path / "sdss.hdf5", columns)
    with open_source(path) as source:
        batch = prepare_rows(source, 0, 3, ["spectrum"])
    parts = sorted(batch.parts, key=lambda p: p.rows[0])
    assert [p.rows.tolist() for p in parts] == [[0, 2], [1]]
    assert all(isinstance(p.modality, m.SDSSSpectrum) for p in parts)
    from aion_fast.codecs import CodecManager

    codecs = CodecManager(repo=demo_checkpoint)
    read = codecs.encode(parts[1].modality)["tok_spectrum_sdss"]
    unpadded = m.SDSSSpectrum(
        flux=torch.from_numpy(flux[1:2, :3900]),
        ivar=torch.from_numpy(ivar[1:2, :3900]),
        mask=torch.zeros(1, 3900, dtype=torch.bool),
        wavelength=torch.from_numpy(lam[1:2, :3900]),
    )
    assert torch.equal(read, codecs.encode(unpadded)["tok_spectrum_sdss"])

    # Rows of both lengths share one pass of the spectrum network (the encode job's batching): same tokens as one
    # codec call per length, and batch_tokens puts them in their rows.
    from aion_fast.jobs.encoder import batch_tokens

    per_length = [codecs.encode(p.modality)["tok_spectrum_sdss"] for p in parts]
    together = codecs.codec(m.SDSSSpectrum).encode_batches([p.modality for p in parts])
    assert all(torch.equal(a, b) for a, b in zip(per_length, together))

    tokens, present = batch_tokens(codecs, batch, "cpu")
    assert present["tok_spectrum_sdss"].all()
    assert torch.equal(tokens["tok_spectrum_sdss"][[0, 2]], per_length[0])
    assert torch.equal(tokens["tok_spectrum_sdss"][1], per_length[1][0])


def test_gaia_coeff_split_bp_then_rp(tmp_path):
    columns = gaia_columns(n=7)
    path = write_mmu(tmp_path / "gaia.hdf5", columns, chunk_rows=3)
    with open_source(path) as source:
        batch = prepare_rows(source, 2, 7, ["gaia"])
    parts = _parts(batch)
    np.testing.assert_array_equal(parts["GaiaXpBp"].modality.value.numpy(), columns["coeff"][2:7, :55])
    np.testing.assert_array_equal(parts["GaiaXpRp"].modality.value.numpy(), columns["coeff"][2:7, 55:])
    np.testing.assert_array_equal(parts["GaiaParallax"].modality.value.numpy(), columns["parallax"][2:7])
    assert batch.object_id == [str(v) for v in columns["object_id"][2:7]] and batch.start == 2


def test_crossmatched_prefixed_columns(tmp_path):
    ls, desi = legacysurvey_columns(n=3), desi_columns()
    columns = {f"legacysurvey_{k}": v for k, v in ls.items()} | {f"desi_{k}": v for k, v in desi.items()}
    columns["object_id"] = np.array(["a", "b", "c"])
    with open_source(write_mmu(tmp_path / "x.hdf5", columns)) as source:
        offered = {use.group for use in selection_of(source, ["image", "spectrum", "photometry"]).uses}
        assert offered == {"image", "spectrum", "photometry"}
        with pytest.raises(SourceConflictError, match="--source position=desi"):  # both surveys have ra/dec
            selection_of(source, ["position"])
        batch = prepare_rows(source, 0, 3, ["image", "spectrum"])
    assert batch.object_id == ["a", "b", "c"]
    assert {"LegacySurveyImage", "DESISpectrum"} == set(_parts(batch))


def test_unusable_modalities_become_issues(tmp_path):
    columns = legacysurvey_columns(n=4)
    columns["FLUX_G"][0] = np.nan
    columns["image_array"][1, 0, 80, 80] = np.inf  # at a good pixel
    columns["image_band"] = np.array([["des-g", "des-r", "des-i", "des-z"]] * 2 + [["des-g", "des-r", "des-r", "des-z"]]
                                     + [["des-g", "des-r", "des-i", "des-z"]])  # fmt: skip
    columns["image_mask"][3] = False
    with open_source(write_mmu(tmp_path / "bad.hdf5", columns)) as source:
        batch = prepare_rows(source, 0, 4, ["image", "photometry"])
    reasons = {(i.row, i.modality): i.reason for i in batch.issues}
    assert "NaN" in reasons[(0, "LegacySurveyFluxG")]
    assert "NaN/inf flux" in reasons[(1, "image")]
    assert "band" in reasons[(2, "image")]
    assert "masked" in reasons[(3, "image")]
    assert _parts(batch)["LegacySurveyImage"].rows.tolist() == [0]


def test_unknown_group_and_row_ranges():
    with pytest.raises(ValueError, match="modalities"):
        prepare_rows(None, 0, 1, ["images"])
    assert row_ranges(10, 3, align=4) == [(0, 4), (4, 8), (8, 10)]
    assert row_ranges(5, 8) == [(0, 5)]
