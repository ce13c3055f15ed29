"""ROAR generation on a tiny checkpoint written by the reference: greedy equals the reference's argmax, draws are
reproducible for any batch split, and aion_fast.generate validates and decodes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import modalities as ref_m

import aion_fast
from aion_fast import modalities as m
from aion_fast.codecs import CodecManager
from aion_fast.generate import roar_generate, roar_schedule
from tests.generate.conftest import flux_tokens
from tests.generate.reference_roar import reference_roar
from tests.utils import assert_tokens_equal


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    root, ref_model = tiny_checkpoint
    return aion_fast.AION.from_pretrained(root).eval(), ref_model, root


@pytest.mark.parametrize(("target", "ref_target"), [("tok_z", ref_m.Z), ("tok_spectrum_desi", ref_m.DESISpectrum)])
@pytest.mark.parametrize("batch", [1, 3])
def test_one_step_greedy_equals_reference_forward_argmax(loaded, target, ref_target, batch):
    model, ref_model, _ = loaded
    inputs = flux_tokens(batch, seed=batch)
    length = ref_target.num_tokens
    tokens = roar_generate(model, inputs, target, num_samples=2, schedule=[length], temperature=0.0, seed=3)
    with torch.no_grad():
        expected = ref_model(inputs, [ref_target])[target].argmax(dim=-1)  # (B, L)
    assert tokens.shape == (batch, 2, length)
    for sample in range(2):
        assert_tokens_equal(tokens[:, sample], expected, f"{target} draw {sample}")


def test_greedy_redshift_equals_the_reference_roar_path(loaded):
    model, ref_model, _ = loaded
    inputs = flux_tokens(4, seed=9)
    ours = roar_generate(model, inputs, "tok_z", num_samples=3, schedule=[1], temperature=0.0, seed=0)
    assert_tokens_equal(ours, reference_roar(ref_model, inputs, "tok_z", 1, 3, [1], temperature=0.0, seed=0))


def test_multi_step_draws_are_reproducible_for_any_batch_split(loaded):
    model, _, _ = loaded
    inputs = flux_tokens(5, seed=2)
    schedule = roar_schedule(273, 0.9)
    ids = torch.tensor([101, 7, 2**40, 55, 3])

    def run(rows, seed=4):
        return roar_generate(model, {k: v[rows] for k, v in inputs.items()}, "tok_spectrum_desi", num_samples=3,
                             schedule=schedule, seed=seed, object_ids=ids[rows])  # fmt: skip

    whole = run(torch.arange(5))
    assert whole.shape == (5, 3, 273) and int(whole.min()) >= 0 and int(whole.max()) < 1024
    assert torch.equal(whole, run(torch.arange(5)))
    assert torch.equal(whole, torch.cat([run(torch.arange(0, 2)), run(torch.arange(2, 5))]))
    assert not torch.equal(whole, run(torch.arange(5), seed=5))
    assert not torch.equal(whole[:, 0], whole[:, 1])  # the draws of one object differ


def test_reveal_order_changes_later_steps(loaded):
    """A multi-step schedule conditions later tokens on earlier ones: greedy one-step and two-step runs differ only
    through that feedback, so both are valid token sets of the right shape."""
    model, _, _ = loaded
    inputs = flux_tokens(2, seed=5)
    two_step = roar_generate(model, inputs, "tok_spectrum_desi", 1, schedule=[200, 73], temperature=0.0, seed=1)
    one_step = roar_generate(model, inputs, "tok_spectrum_desi", 1, schedule=[273], temperature=0.0, seed=1)
    assert two_step.shape == one_step.shape == (2, 1, 273)


def test_generate_api_decodes_redshift_draws(loaded):
    model, _, root = loaded
    codecs = CodecManager(repo=root)
    g = torch.Generator().manual_seed(0)
    fluxes = [cls(value=torch.rand(4, generator=g) * 20 + 0.5) for cls in
              (m.LegacySurveyFluxG, m.LegacySurveyFluxR, m.LegacySurveyFluxI, m.LegacySurveyFluxZ)]  # fmt: skip
    z = aion_fast.generate(model, codecs, inputs=fluxes, target=m.Z, num_samples=50, seed=0)
    assert isinstance(z, m.Z) and z.value.shape == (4, 50)
    assert bool(torch.isfinite(z.value).all())
    again = aion_fast.generate(model, codecs, inputs=fluxes, target=m.Z, num_samples=50, seed=0)
    assert torch.equal(z.value, again.value)
    greedy = aion_fast.generate(model, codecs, inputs=fluxes, target=m.Z, num_samples=2, temperature=0.0)
    assert bool((greedy.value[:, 0] == greedy.value[:, 1]).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"decay": 1.0}, "decay"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"temperature": -0.5}, "temperature"),
        ({"schedule": [1, 1]}, "sum"),
    ],
)
def test_generate_rejects_bad_arguments(loaded, kwargs, match):
    model, _, root = loaded
    codecs = CodecManager(repo=root)
    with pytest.raises(ValueError, match=match):
        aion_fast.generate(model, codecs, inputs=flux_tokens(2), target=m.Z, **kwargs)


def test_generate_rejects_a_target_the_model_does_not_decode(loaded):
    model, _, root = loaded
    with pytest.raises(ValueError, match="not a decoder output"):
        aion_fast.generate(model, CodecManager(repo=root), inputs=flux_tokens(2), target=m.LegacySurveyImage)
    with pytest.raises(ValueError, match="inputs include the target"):
        aion_fast.generate(model, CodecManager(repo=root), inputs={**flux_tokens(2), "tok_z": torch.zeros(2, 1,
                           dtype=torch.long)}, target=m.Z)  # fmt: skip


def test_inputs_are_not_modified(loaded):
    model, _, _ = loaded
    inputs = flux_tokens(2)
    before = {k: v.clone() for k, v in inputs.items()}
    roar_generate(model, inputs, "tok_spectrum_desi", 2, schedule=[100, 173], seed=0)
    assert all(torch.equal(inputs[k], before[k]) for k in inputs)


def test_generate_stays_callable_after_the_subpackage_is_imported():
    import aion_fast.generate.roar  # noqa: F401 - binds aion_fast.generate to the subpackage

    assert callable(aion_fast.generate)
    with pytest.raises(ValueError, match="modality class"):
        aion_fast.generate(None, None, inputs=[], target="tok_z")


def test_spectral_super_resolution_from_gaia_xp(tmp_path):
    """Gaia XP coefficients -> DESI spectra on a requested wavelength grid (the issue's second example)."""
    import aion_fast
    from aion_fast import modalities as m
    from aion_fast.demo import build_untrained_checkpoint

    checkpoint = build_untrained_checkpoint(tmp_path / "ckpt")  # has XP inputs, a spectrum target and its codec
    model = aion_fast.AION.from_pretrained(checkpoint)
    codecs = aion_fast.CodecManager(repo=checkpoint)
    g = torch.Generator().manual_seed(0)
    bp = m.GaiaXpBp(value=torch.randn(2, 55, generator=g) * 100)
    rp = m.GaiaXpRp(value=torch.randn(2, 55, generator=g) * 100)
    desi_grid = 3600 + 0.8 * torch.arange(7781.0)
    kwargs = dict(inputs=[bp, rp], target=m.DESISpectrum, num_samples=3, seed=0, wavelength=desi_grid, max_steps=6)
    spectra = aion_fast.generate(model, codecs, **kwargs)
    assert isinstance(spectra, m.DESISpectrum)
    assert spectra.flux.shape == spectra.wavelength.shape == (2, 3, 7781)
    assert torch.isfinite(spectra.flux).all()
    assert torch.equal(spectra.flux, aion_fast.generate(model, codecs, **kwargs).flux)  # same seed, same draws
    assert not torch.equal(spectra.flux[:, 0], spectra.flux[:, 1])  # the draws differ from each other
