"""SpectrumCodec against the reference (polymathic-aion 0.0.2) as an oracle.

Reference codecs get random weights (every parameter redrawn, so LayerNorm, GRN and biases all matter), are saved
with the reference's own ``save_pretrained`` and loaded with ours; tokens must be identical and decoded fluxes equal
to 1e-5 relative. The default run uses a small network; the AION-1 size runs under ``-m slow``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
import aion
import aion.codecs
import aion.modalities
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aion_fast import modalities as m
from aion_fast.codecs.spectral_grid import latent_wavelength
from aion_fast.codecs.spectrum import SpectrumCodec
from tests.data_tests.desi_coadd import read_desi_coadd
from tests.utils import assert_close_rel, assert_tokens_equal

DATA = Path(__file__).resolve().parents[1] / "data" / "desi_edr"

SMALL = {
    "encoder_depths": (1, 1, 1, 1),
    "encoder_dims": (16, 32, 64, 128),
    "decoder_depths": (1, 1, 1, 1),
    "decoder_dims": (64, 32, 16, 2),
    "latent_channels": 128,
    "embedding_dim": 10,
    "dim": 10,
}
#: AION-1's spectrum codec (the released config): the reference defaults with these two fixed.
BASE = {"latent_channels": 768, "embedding_dim": 10, "dim": 10}


def _randomize(codec: torch.nn.Module, seed: int) -> None:
    """Redraws every parameter: weights N(0, 1/fan_in), norm scales 1 + N(0, 0.2), biases N(0, 0.2), GRN N(0, 0.3)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in codec.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith(("grn.gamma", "grn.beta")):
                p.copy_(0.3 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


def _reference_and_ours(directory: Path, config: dict, seed: int):
    """A randomised reference codec, saved by the reference and loaded by aion_fast."""
    reference = aion.codecs.SpectrumCodec(**config).eval()
    _randomize(reference, seed)
    reference.save_pretrained(str(directory), modality=aion.modalities.DESISpectrum)
    ours = SpectrumCodec.from_pretrained(directory, modality=m.DESISpectrum)
    return reference, ours


def _to_reference(spectrum: m.Spectrum):
    cls = aion.modalities.SDSSSpectrum if isinstance(spectrum, m.SDSSSpectrum) else aion.modalities.DESISpectrum
    return cls(**{f: getattr(spectrum, f).clone() for f in ("flux", "ivar", "mask", "wavelength")})


def _reference_tokens(reference, spectrum: m.Spectrum) -> torch.Tensor:
    with torch.no_grad():
        return reference.encode(_to_reference(spectrum))


def _sdss_like(batch: int, length: int, seed: int) -> m.SDSSSpectrum:
    """Log-lambda spectra over ~3600-10400 A: power-law continua spanning 4 decades in level, emission lines, noise."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log10(3600.0), math.log10(10400.0)
    shift = torch.rand(batch, 1, generator=g, dtype=torch.float64) * 0.01
    loglam = lo + shift + torch.arange(length, dtype=torch.float64) * ((hi - lo) / (length - 1))
    wavelength = 10.0**loglam
    level = 10.0 ** (torch.rand(batch, 1, generator=g, dtype=torch.float64) * 4 - 1.5)
    slope = torch.randn(batch, 1, generator=g, dtype=torch.float64)
    flux = level * (wavelength / 6000.0) ** slope
    for line in (4862.7, 5008.2, 6564.6, 6585.3):
        z = torch.rand(batch, 1, generator=g, dtype=torch.float64) * 0.3
        flux = flux + 3 * level * torch.exp(-0.5 * ((wavelength - line * (1 + z)) / 3.0) ** 2)
    sigma = 0.1 * level + 0.05
    flux = flux + sigma * torch.randn(batch, length, generator=g, dtype=torch.float64)
    ivar = (1.0 / sigma**2).expand(batch, length).clone()
    mask = torch.rand(batch, length, generator=g) < 0.03
    ivar[mask & (torch.rand(batch, length, generator=g) < 0.5)] = 0.0
    return m.SDSSSpectrum(flux=flux.float(), ivar=ivar.float(), mask=mask | (ivar == 0), wavelength=wavelength.float())


def _desi_like(batch: int, seed: int) -> m.DESISpectrum:
    sdss = _sdss_like(batch, 7781, seed)
    wavelength = (3600.0 + 0.8 * torch.arange(7781, dtype=torch.float64)).float().expand(batch, -1).clone()
    return m.DESISpectrum(flux=sdss.flux, ivar=sdss.ivar, mask=sdss.mask, wavelength=wavelength)


@pytest.fixture(scope="module")
def spectrum_codecs(tmp_path_factory):
    """(reference, ours) small codecs with identical random weights, flux + mask decoder."""
    return _reference_and_ours(tmp_path_factory.mktemp("spectrum_small"), SMALL, seed=11)


@pytest.fixture(scope="module")
def spectrum_desi_edr() -> m.DESISpectrum:
    """The 3 real DESI EDR spectra of tests/data, joined by tests/data_tests/desi_coadd.py."""
    reads = [read_desi_coadd(DATA / name) for name in ("coadd-5-169-thru20210419.fits", "coadd-sv3-dark-26065.fits")]
    arrays = {
        k: torch.from_numpy(np.concatenate([r[k] for r in reads])) for k in ("flux", "ivar", "mask", "wavelength")
    }
    return m.DESISpectrum(**arrays)


# ---------------------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("config", [SMALL, BASE], ids=["small", "base"])
def test_state_dict_keys_shapes_and_seeded_init_match_reference(config):
    torch.manual_seed(3)
    reference = aion.codecs.SpectrumCodec(**config).state_dict()
    torch.manual_seed(3)
    ours = SpectrumCodec(**config).state_dict()
    assert list(ours) == list(reference)
    for key, value in reference.items():
        assert ours[key].shape == value.shape and ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key  # modules are created in the reference's order


def test_default_config_is_refused_with_the_fix():
    with pytest.raises(ValueError) as error:
        SpectrumCodec()
    message = str(error.value)
    assert "latent_channels=768" in message and "embedding_dim=10" in message


@pytest.mark.parametrize(
    "change, words",
    [
        ({"encoder_depths": (1, 1, 1)}, "same length"),
        ({"decoder_dims": (64, 32, 16, 3)}, "decoder_dims[-1]=3"),
        ({"num_pixels": 8700}, "multiple of 32"),
        ({"codebook_size": 1000}, "power of two"),
        ({"normalization_range": (5, -1)}, "low < high"),
        ({"clip_ivar": 0}, "clip_ivar"),
    ],
)
def test_inconsistent_configs_raise_value_error(change, words):
    with pytest.raises(ValueError, match="inconsistent SpectrumCodec") as error:
        SpectrumCodec(**{**SMALL, **change})
    assert words in str(error.value)


def test_latent_grid_equals_reference_buffer(spectrum_codecs):
    reference, ours = spectrum_codecs
    assert torch.equal(latent_wavelength(3500.0, 0.8, 8704), reference.latent_grid._wavelength[0])
    assert torch.equal(ours.latent_grid.wavelength, reference.latent_grid.wavelength)
    assert ours.num_tokens == 273


# ---------------------------------------------------------------------------------------------------------- tokens


def test_tokens_real_desi_edr(spectrum_codecs, spectrum_desi_edr):
    reference, ours = spectrum_codecs
    tokens = ours.encode(spectrum_desi_edr)
    assert tokens.shape == (3, 273) and tokens.dtype == torch.int64
    assert_tokens_equal(tokens, _reference_tokens(reference, spectrum_desi_edr), "real DESI EDR tokens")
    assert len(torch.unique(tokens[:, 1:])) > 3  # the random network does not collapse to one code


def test_latents_before_quantization_are_bitwise_the_references(spectrum_codecs, spectrum_desi_edr):
    """Stronger than token equality: the float32 latents whose signs are the tokens are identical bit for bit."""
    reference, ours = spectrum_codecs
    with torch.no_grad():
        expected, _ = reference._encode(_to_reference(spectrum_desi_edr))
    with torch.inference_mode():
        latents = ours.encode_latents(ours.preprocess(spectrum_desi_edr)).latents
    assert torch.equal(latents, expected)


def test_inference_fast_path_equals_autograd_path(spectrum_codecs):
    """The in-place / workspace path taken without gradients computes the autograd path's values bit for bit."""
    _, ours = spectrum_codecs
    x = torch.randn(2, 2, 8704)
    keep = x.clone()
    with torch.inference_mode():
        fast = ours.encoder(x)
        fast_decoded = ours.decoder(fast)
    slow = ours.encoder(x)
    assert slow.requires_grad
    assert torch.equal(fast, slow.detach())
    assert torch.equal(fast_decoded, ours.decoder(slow).detach())
    assert torch.equal(x, keep)


@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("length", [3840, 4646])
def test_tokens_sdss_like(spectrum_codecs, batch, length):
    reference, ours = spectrum_codecs
    spectrum = _sdss_like(batch, length, seed=batch * 10_000 + length)
    assert_tokens_equal(
        ours.encode(spectrum), _reference_tokens(reference, spectrum), f"SDSS-like B={batch} L={length}"
    )


def test_tokens_with_nan_and_inf_in_masked_pixels(spectrum_codecs):
    reference, ours = spectrum_codecs
    spectrum = _sdss_like(4, 3840, seed=5)
    flux, ivar, mask = spectrum.flux.clone(), spectrum.ivar.clone(), spectrum.mask.clone()
    mask[:, 100:140] = True
    flux[:, 100:110] = float("nan")
    ivar[:, 110:120] = float("nan")
    flux[0, 120] = float("inf")
    ivar[1, 130] = float("inf")
    dirty = m.SDSSSpectrum(flux=flux, ivar=ivar, mask=mask, wavelength=spectrum.wavelength)
    assert_tokens_equal(ours.encode(dirty), _reference_tokens(reference, dirty), "NaN/inf in masked pixels")


def test_tokens_with_flux_clip_and_no_ivar_clip(tmp_path):
    config = {**SMALL, "clip_flux": 30.0, "clip_ivar": None}
    reference, ours = _reference_and_ours(tmp_path, config, seed=2)
    spectrum = _sdss_like(3, 3840, seed=9)
    assert_tokens_equal(ours.encode(spectrum), _reference_tokens(reference, spectrum), "clip_flux=30, clip_ivar=None")


def test_float64_input_gives_the_float32_tokens(spectrum_codecs):
    _, ours = spectrum_codecs
    spectrum = _sdss_like(2, 3840, seed=4)
    double = m.SDSSSpectrum(
        flux=spectrum.flux.double(), ivar=spectrum.ivar.double(), mask=spectrum.mask,
        wavelength=spectrum.wavelength.double(),
    )  # fmt: skip
    assert_tokens_equal(ours.encode(double), ours.encode(spectrum), "float64 input")


def test_codec_manager_encodes_with_the_spectrum_codec(spectrum_codecs, spectrum_desi_edr, tmp_path):
    from aion_fast.codecs.manager import CodecManager

    reference, ours = spectrum_codecs
    ours.save_pretrained(tmp_path, modality=m.DESISpectrum)
    manager = CodecManager(repo=tmp_path)
    tokens = manager.encode(spectrum_desi_edr)
    assert_tokens_equal(tokens["tok_spectrum_desi"], _reference_tokens(reference, spectrum_desi_edr), "manager")
    decoded = manager.decode(tokens, m.DESISpectrum)
    assert type(decoded) is m.DESISpectrum


# ---------------------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("observed", [False, True], ids=["latent_grid", "observed_grid"])
def test_decode_matches_reference(spectrum_codecs, spectrum_desi_edr, observed):
    reference, ours = spectrum_codecs
    tokens = ours.encode(spectrum_desi_edr)
    wavelength = spectrum_desi_edr.wavelength if observed else None
    with torch.no_grad():
        expected = reference.decode(tokens, wavelength=None if wavelength is None else wavelength.clone())
    decoded = ours.decode(tokens, wavelength=wavelength)
    assert type(decoded) is m.DESISpectrum
    assert decoded.flux.shape == expected.flux.shape == ((3, 7781) if observed else (3, 8704))
    assert_close_rel(decoded.flux, expected.flux, rtol=1e-5, what="decoded flux")
    assert torch.equal(decoded.mask, expected.mask)
    assert torch.equal(decoded.wavelength, expected.wavelength)
    assert torch.equal(decoded.ivar, torch.ones_like(decoded.flux))
    assert 0.0 < decoded.mask.float().mean() < 1.0  # the random mask head predicts both classes


def test_decode_returns_the_requested_class_and_accepts_1d_wavelength(spectrum_codecs):
    _, ours = spectrum_codecs
    tokens = torch.randint(0, 1024, (2, 273))
    wavelength = 10.0 ** torch.linspace(math.log10(3600.0), math.log10(10400.0), 3840)
    decoded = ours.decode(tokens, wavelength=wavelength, modality=m.SDSSSpectrum)
    assert type(decoded) is m.SDSSSpectrum and decoded.flux.shape == (2, 3840)
    assert torch.equal(decoded.wavelength, wavelength.expand(2, -1))


def test_single_channel_decoder_mask_is_all_good(tmp_path):
    """With a flux-only decoder the reference returns mask=True everywhere when given wavelengths (NaN logits);
    aion_fast returns all-good masks and the same flux."""
    config = {**SMALL, "decoder_dims": (64, 32, 16, 1)}
    reference, ours = _reference_and_ours(tmp_path, config, seed=4)
    tokens = torch.randint(0, 1024, (2, 273))
    wavelength = (3600.0 + 0.8 * torch.arange(7781)).expand(2, -1).contiguous()
    with torch.no_grad():
        expected = reference.decode(tokens, wavelength=wavelength.clone())
    decoded = ours.decode(tokens, wavelength=wavelength)
    assert_close_rel(decoded.flux, expected.flux, rtol=1e-5, what="decoded flux")
    assert bool(expected.mask.all()) and not bool(decoded.mask.any())


# ---------------------------------------------------------------------------------------------------------- interop


def test_aion_fast_checkpoint_loads_into_the_reference(tmp_path, spectrum_desi_edr):
    torch.manual_seed(7)
    ours = SpectrumCodec(**SMALL).eval()
    _randomize(ours, seed=7)
    folder = ours.save_pretrained(tmp_path, modality=m.DESISpectrum)
    config = json.loads((folder / "config.json").read_text())
    # The reference's hub mixin cannot load a local directory (it looks for codecs/<name>/config.json with
    # os.listdir of the root), so build the reference codec from the saved config and load the saved weights.
    reference = aion.codecs.SpectrumCodec(**config).eval()
    reference.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    assert_tokens_equal(ours.encode(spectrum_desi_edr), _reference_tokens(reference, spectrum_desi_edr), "reload")


def test_caller_tensors_are_not_modified(spectrum_codecs):
    _, ours = spectrum_codecs
    spectrum = _sdss_like(3, 4646, seed=1)
    spectrum.flux[:, :5] = float("nan")
    spectrum.ivar[:, 5:10] = float("inf")
    spectrum.ivar[:, 10:15] = -3.0
    spectrum.mask[:, :15] = True
    spectrum.flux[0, 20:25] = 1e4  # beyond a flux clip
    before = {f: getattr(spectrum, f).clone() for f in ("flux", "ivar", "mask", "wavelength")}
    tokens = ours.encode(spectrum)
    wavelength = spectrum.wavelength.clone()
    ours.decode(tokens, wavelength=wavelength)
    for field, value in before.items():
        torch.testing.assert_close(getattr(spectrum, field), value, rtol=0, atol=0, equal_nan=True, msg=field)
    assert torch.equal(wavelength, spectrum.wavelength)


# ---------------------------------------------------------------------------------------------------------- errors


def _with(spectrum: m.Spectrum, **fields) -> m.Spectrum:
    values = {f: getattr(spectrum, f).clone() for f in ("flux", "ivar", "mask", "wavelength")}
    values.update(fields)
    return type(spectrum)(**values)


def test_non_finite_at_unflagged_pixels_names_rows(spectrum_codecs):
    _, ours = spectrum_codecs
    spectrum = _sdss_like(4, 3840, seed=2)
    flux = spectrum.flux.clone()
    flux[1, 50] = float("nan")
    ivar = spectrum.ivar.clone()
    ivar[3, 7] = float("inf")
    mask = spectrum.mask.clone()
    mask[1, 50] = mask[3, 7] = False
    with pytest.raises(ValueError, match=r"rows \[1, 3\].*not flagged in mask"):
        ours.encode(_with(spectrum, flux=flux, ivar=ivar, mask=mask))


def test_all_masked_row_is_refused(spectrum_codecs):
    _, ours = spectrum_codecs
    spectrum = _sdss_like(3, 3840, seed=2)
    mask = spectrum.mask.clone()
    mask[2] = True
    with pytest.raises(ValueError, match=r"rows \[2\] have every pixel masked"):
        ours.encode(_with(spectrum, mask=mask))


def test_rows_outside_the_latent_grid_are_refused(spectrum_codecs):
    _, ours = spectrum_codecs
    spectrum = _sdss_like(3, 3840, seed=2)
    wavelength = spectrum.wavelength.clone()
    wavelength[0] = wavelength[0] / 10.0  # nanometres
    with pytest.raises(ValueError, match=r"rows \[0\] do not overlap the latent grid"):
        ours.encode(_with(spectrum, wavelength=wavelength))


def test_wrong_modality_and_wrong_tokens_are_refused(spectrum_codecs):
    _, ours = spectrum_codecs
    with pytest.raises(ValueError, match="encodes Spectrum"):
        ours.encode(m.LegacySurveyImage(flux=torch.zeros(1, 4, 8, 8), bands=["DES-G", "DES-R", "DES-I", "DES-Z"]))
    with pytest.raises(ValueError, match=r"shape \(batch, 273\)"):
        ours.decode(torch.zeros(2, 272, dtype=torch.long))
    with pytest.raises(ValueError):
        ours.decode(torch.full((1, 273), 1024))
    with pytest.raises(ValueError, match="Spectrum class"):
        ours.decode(torch.zeros(1, 273, dtype=torch.long), modality=m.LegacySurveyImage)


# ---------------------------------------------------------------------------------------------------------- AION-1 size


@pytest.mark.slow
def test_base_size_tokens_and_decode_match_reference(tmp_path, spectrum_desi_edr):
    reference, ours = _reference_and_ours(tmp_path, BASE, seed=21)
    for spectrum in (_desi_like(8, seed=3), spectrum_desi_edr, _sdss_like(3, 4646, seed=8)):
        tokens = ours.encode(spectrum)
        assert_tokens_equal(tokens, _reference_tokens(reference, spectrum), f"base size, {type(spectrum).__name__}")
    with torch.no_grad():
        expected = reference.decode(tokens, wavelength=spectrum.wavelength.clone())
    decoded = ours.decode(tokens, wavelength=spectrum.wavelength)
    assert_close_rel(decoded.flux, expected.flux, rtol=1e-5, what="base-size decoded flux")
    assert not bool(decoded.mask.any())  # the released decoder predicts flux only


@pytest.mark.parametrize("observed", [False, True])
def test_decode_backends_agree_exactly(spectrum_codecs, spectrum_desi_edr, monkeypatch, observed):
    """The decode epilogue (aion_fast.ops.spectrum_to_observed) is bit-identical on the torch and C++ paths."""
    from aion_fast import dispatch

    if dispatch.load_extension() is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    _, ours = spectrum_codecs
    tokens = ours.encode(spectrum_desi_edr)
    wavelength = spectrum_desi_edr.wavelength if observed else None
    decoded = {}
    for name in ("torch", "cpp"):
        monkeypatch.setenv(dispatch.ENV_VAR, name)
        decoded[name] = ours.decode(tokens, wavelength=wavelength)
    assert torch.equal(decoded["cpp"].flux, decoded["torch"].flux)
    assert torch.equal(decoded["cpp"].mask, decoded["torch"].mask)
