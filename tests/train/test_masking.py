"""AION-1 masking (paper §5.2): budgets, disjointness, presence, the skew of target counts, the model's conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aion_fast.train.masking import sample_masks

#: A palette of token keys with the model's token counts (grids) and the catalog sequence.
WIDTHS = {
    "tok_image": 576,
    "tok_spectrum_desi": 273,
    "tok_xp_bp": 55,
    "tok_xp_rp": 55,
    "tok_flux_g": 1,
    "tok_flux_r": 1,
    "tok_z": 1,
    "catalog": 50,
}


def random_present(batch: int, keys: dict[str, int], p: float, seed: int) -> dict[str, torch.Tensor]:
    """Per object a random subset of modalities; catalog entries are a random-length prefix (the rest padding)."""
    g = torch.Generator().manual_seed(seed)
    present = {k: (torch.rand(batch, 1, generator=g) < p).expand(-1, n).clone() for k, n in keys.items()}
    if "catalog" in present:
        lengths = torch.randint(1, keys["catalog"] + 1, (batch, 1), generator=g)
        present["catalog"] &= torch.arange(keys["catalog"])[None] < lengths
    return present


def flat(masks: dict[str, torch.Tensor], keys) -> torch.Tensor:
    return torch.cat([masks[k] for k in keys], dim=1)


def check_invariants(present, input_mask, target_mask, input_budget, output_budget, sequence_keys=("catalog",)):
    keys = list(present)
    assert list(input_mask) == keys and list(target_mask) == keys
    for k in keys:
        assert input_mask[k].dtype == torch.bool and input_mask[k].shape == present[k].shape
        assert target_mask[k].dtype == torch.bool and target_mask[k].shape == present[k].shape
    exists = flat(present, keys)
    inputs, targets = ~flat(input_mask, keys), ~flat(target_mask, keys)
    assert not (inputs & ~exists).any(), "an absent token became an input"
    assert not (targets & ~exists).any(), "an absent token became a target"
    assert not (inputs & targets).any(), "a token is both input and target"
    assert int(inputs.sum(1).max()) <= input_budget
    assert int(targets.sum(1).max()) <= output_budget
    grid = [k for k in keys if k not in sequence_keys]
    grid_tokens = flat(present, grid).sum(1) if grid else torch.zeros(exists.shape[0], dtype=torch.long)
    fitting_sequence = torch.zeros(exists.shape[0], dtype=torch.bool)
    for k in sequence_keys:
        if k in present:
            fitting_sequence |= (present[k].sum(1) >= 1) & (present[k].sum(1) <= input_budget)
    can_input = (grid_tokens >= 1) | fitting_sequence
    assert bool((inputs.sum(1) >= 1)[can_input].all()), "an object with tokens got no input"
    assert bool((targets.sum(1) >= 1)[grid_tokens >= 2].all()), "an object with >= 2 grid tokens got no target"
    for k in sequence_keys:
        if k in present:
            n = present[k].sum(1)
            for selection in (~input_mask[k] & present[k], ~target_mask[k] & present[k]):
                taken = selection.sum(1)
                assert bool(((taken == 0) | (taken == n)).all()), f"{k} was split"
    return inputs, targets


@pytest.mark.parametrize("batch", [1, 3, 7, 33])
@pytest.mark.parametrize("p", [0.3, 0.8])
def test_invariants_realistic_batches(batch, p):
    present = random_present(batch, WIDTHS, p, seed=batch)
    before = {k: v.clone() for k, v in present.items()}
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        check_invariants(present, *sample_masks(present, generator=g), 256, 128)
    for k in present:
        assert torch.equal(present[k], before[k]), "sample_masks modified its input"


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 9),
    keys=st.lists(st.sampled_from(sorted(WIDTHS)), min_size=1, max_size=len(WIDTHS), unique=True),
    p=st.floats(0.05, 1.0),
    input_budget=st.integers(1, 300),
    output_budget=st.integers(1, 200),
    seed=st.integers(0, 2**31 - 1),
)
def test_invariants_property(batch, keys, p, input_budget, output_budget, seed):
    """Any batch size, key set, presence pattern and budget (including objects with fewer tokens than the budgets,
    objects with one modality and objects with none)."""
    present = random_present(batch, {k: WIDTHS[k] for k in keys}, p, seed)
    g = torch.Generator().manual_seed(seed)
    check_invariants(present, *sample_masks(present, input_budget, output_budget, generator=g), input_budget,
                     output_budget)  # fmt: skip


def test_objects_with_a_few_tokens_share_them_between_inputs_and_targets():
    # Gaia-like: 55 + 55 + 1 tokens < 256 + 128: inputs take ~2/3, the rest can be targets.
    present = {k: torch.ones(500, WIDTHS[k], dtype=torch.bool) for k in ("tok_xp_bp", "tok_xp_rp", "tok_flux_g")}
    inputs, targets = check_invariants(present, *sample_masks(present, generator=torch.Generator().manual_seed(0)),
                                       256, 128)  # fmt: skip
    assert int(inputs.sum(1).max()) <= 111 * 256 // 384
    assert bool((targets.sum(1) >= 1).all())
    # One token: it is the input, nothing is left to predict.
    one = {"tok_z": torch.ones(4, 1, dtype=torch.bool)}
    input_mask, target_mask = sample_masks(one, generator=torch.Generator().manual_seed(0))
    assert not input_mask["tok_z"].any() and target_mask["tok_z"].all()


def test_single_modality_input_count_is_uniform_and_target_count_skewed_to_zero():
    """One image per object: the input count is U{1..256}; the target count is ceil(u * 128), u ~ Beta(1, 3)."""
    n = 4000
    present = {"tok_image": torch.ones(n, 576, dtype=torch.bool)}
    input_mask, target_mask = sample_masks(present, generator=torch.Generator().manual_seed(3))
    inputs = (~input_mask["tok_image"]).sum(1).double()
    targets = (~target_mask["tok_image"]).sum(1).double()
    assert int(inputs.min()) >= 1 and int(inputs.max()) == 256
    # U{1..256}: mean 128.5, sd 73.9; quartile counts ~ n/4 each.
    assert abs(float(inputs.mean()) - 128.5) < 5 * 73.9 / n**0.5
    quartiles = torch.histc(inputs, bins=4, min=0.5, max=256.5)
    assert bool(((quartiles - n / 4).abs() < 5 * (n * 3 / 16) ** 0.5).all()), quartiles
    # Beta(1, 3) fraction of 128: mean 0.25 (sd 0.194), P(u < 1/2) = 7/8; skewed toward zero.
    fraction = targets / 128
    assert abs(float(fraction.mean()) - (0.25 + 0.5 / 128)) < 5 * 0.194 / n**0.5
    assert abs(float((fraction <= 0.5).double().mean()) - 0.875) < 5 * (0.875 * 0.125 / n) ** 0.5
    assert float(targets.median()) < 64


def test_per_modality_target_counts_are_skewed_toward_zero():
    present = random_present(2000, WIDTHS, 0.7, seed=5)
    input_mask, target_mask = sample_masks(present, generator=torch.Generator().manual_seed(5))
    for key in ("tok_image", "tok_spectrum_desi", "tok_xp_bp"):
        left = (present[key] & input_mask[key]).sum(1)  # tokens not taken as inputs
        taken = (~target_mask[key]).sum(1)
        rows = left >= 16
        fraction = (taken[rows].double() / left[rows].clamp(max=128)).numpy()
        # Skewed toward zero: most objects predict well under half of what they could.
        assert np.mean(fraction) < 0.3 and np.median(fraction) < 0.2 and np.mean(fraction < 0.5) > 0.8, key


def test_first_input_modality_is_uniform_over_present_modalities():
    """Image (576) + one redshift token: redshift is an input iff it is picked first (prob 1/2) or drawn in the
    fill of 255 of 576 + 1 image... no: with the image first, n ~ U{1..256} image tokens and the fill has only the
    redshift left, so redshift is an input unless the image took all 256 slots (prob 1/256)."""
    n = 4000
    present = {"tok_image": torch.ones(n, 576, dtype=torch.bool), "tok_z": torch.ones(n, 1, dtype=torch.bool)}
    input_mask, _ = sample_masks(present, generator=torch.Generator().manual_seed(11))
    redshift_input = float((~input_mask["tok_z"]).double().mean())
    # P = 1/2 (picked first) + 1/2 * 255/256 (filled in).
    expected = 0.5 + 0.5 * 255 / 256
    assert abs(redshift_input - expected) < 5 * (expected * (1 - expected) / n) ** 0.5 + 1e-3
    # When redshift is first, U{1..1} = 1 token of it and 255 image tokens: the image input count has an atom at 255.
    image_inputs = (~input_mask["tok_image"]).sum(1)
    at_255 = float((image_inputs == 255).double().mean())
    assert abs(at_255 - (0.5 + 0.5 / 256)) < 5 * (0.25 / n) ** 0.5


def test_deterministic_given_the_generator_state():
    present = random_present(16, WIDTHS, 0.6, seed=2)
    a = sample_masks(present, generator=torch.Generator().manual_seed(7))
    b = sample_masks(present, generator=torch.Generator().manual_seed(7))
    c = sample_masks(present, generator=torch.Generator().manual_seed(8))
    for k in present:
        assert torch.equal(a[0][k], b[0][k]) and torch.equal(a[1][k], b[1][k])
    assert any(not torch.equal(a[0][k], c[0][k]) for k in present)


def test_masks_follow_the_model_conventions():
    """Fed to AION.embed_inputs / embed_targets, exactly the sampled tokens are inputs and the sampled grid
    positions are queries (a target catalog gives next-token queries between consecutive present entries)."""
    from aion_fast.model import AION, architecture

    keys = ["tok_spectrum_desi", "tok_xp_bp", "tok_flux_g", "tok_z", "catalog"]
    model = AION(architecture(keys, keys, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2)).eval()
    present = random_present(6, {k: WIDTHS[k] for k in keys}, 0.7, seed=4)
    present["tok_flux_g"][0] = True  # at least one token in every row
    tokens = {k: torch.randint(1, 1024, v.shape) for k, v in present.items()}
    input_mask, target_mask = sample_masks(present, 64, 32, generator=torch.Generator().manual_seed(4))
    inputs, targets = ~flat(input_mask, keys), ~flat(target_mask, keys)
    with torch.no_grad():
        _, _, encoder_mask, mod_mask = model.embed_inputs(tokens, mask=input_mask)
        _, _, decoder_mask, *_ = model.embed_targets(target_mask)
    assert torch.equal((~encoder_mask[:, 0]).sum(1), inputs.sum(1))
    catalog_targets = (~target_mask["catalog"]).sum(1)
    expected_queries = targets.sum(1) - catalog_targets + (catalog_targets - 1).clamp(min=0)
    assert torch.equal((~decoder_mask[:, 0]).sum(1), expected_queries)


def test_bad_arguments_raise_value_errors():
    g = torch.Generator()
    ok = {"tok_z": torch.ones(2, 1, dtype=torch.bool)}
    with pytest.raises(ValueError, match="bool tensor of shape"):
        sample_masks({"tok_z": torch.ones(2, 1)}, generator=g)
    with pytest.raises(ValueError, match="batch size"):
        sample_masks({"tok_z": torch.ones(2, 1, dtype=torch.bool), "tok_ebv": torch.ones(3, 1, dtype=torch.bool)},
                     generator=g)  # fmt: skip
    with pytest.raises(ValueError, match="empty batch"):
        sample_masks({"tok_z": torch.ones(0, 1, dtype=torch.bool)}, generator=g)
    with pytest.raises(ValueError, match="input_budget"):
        sample_masks(ok, 0, generator=g)
    with pytest.raises(ValueError, match="target_beta"):
        sample_masks(ok, generator=g, target_beta=(1.0, 0.0))
    with pytest.raises(ValueError, match="generator"):
        sample_masks(ok, generator=None)
    with pytest.raises(ValueError, match="non-empty"):
        sample_masks({}, generator=g)
