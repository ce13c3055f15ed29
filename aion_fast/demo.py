"""The demo architectures (the bundled demo model's transformer and codec sizes) and a seeded random-weight
checkpoint of them in the aion-base layout, for tests, benchmarks and ``aion-fast tokenize``'s default codecs.

Its weights are random: embeddings from it carry no science. The trained demo model jobs use by default is
:func:`aion_fast.hub.default_model`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aion_fast import modalities as m

DEMO_SEED = 0

#: Photometry columns of the sample and the modality each one feeds.
PHOTOMETRY = {
    "FLUX_G": m.LegacySurveyFluxG,
    "FLUX_R": m.LegacySurveyFluxR,
    "FLUX_Z": m.LegacySurveyFluxZ,
    "FLUX_W1": m.LegacySurveyFluxW1,
    "FLUX_W2": m.LegacySurveyFluxW2,
    "SHAPE_R": m.LegacySurveyShapeR,
    "SHAPE_E1": m.LegacySurveyShapeE1,
    "SHAPE_E2": m.LegacySurveyShapeE2,
    "EBV": m.LegacySurveyEBV,
}

#: The AION-1-B architecture scaled down (width 128, 2 + 2 blocks, 4 heads).
DEMO_TRANSFORMER = {"dim": 128, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4}

#: A small image codec of the released layout (FSQ levels [7, 5, 5, 5, 5], 576 tokens), width 32, one block per stage.
DEMO_IMAGE_CODEC = {"quantizer_levels": [7, 5, 5, 5, 5], "hidden_dims": 32, "num_consecutive": 1}

#: Scalar columns of the bundled MMU sample beyond ``PHOTOMETRY`` (Legacy Survey I/W3/W4 fluxes, Gaia photometry).
EXTRA_SCALARS = {
    "FLUX_I": m.LegacySurveyFluxI,
    "FLUX_W3": m.LegacySurveyFluxW3,
    "FLUX_W4": m.LegacySurveyFluxW4,
    "phot_g_mean_flux": m.GaiaFluxG,
    "phot_bp_mean_flux": m.GaiaFluxBp,
    "phot_rp_mean_flux": m.GaiaFluxRp,
    "parallax": m.GaiaParallax,
}

DEMO_SPECTRUM_CODEC = {
    "encoder_depths": [1, 1, 1, 1],
    "encoder_dims": [16, 32, 64, 128],
    "decoder_depths": [1, 1, 1, 1],
    "decoder_dims": [64, 32, 16, 1],
    "latent_channels": 128,
    "embedding_dim": 10,
    "dim": 10,
}


def _synthetic_scalar_draws(name: str, generator: torch.Generator) -> torch.Tensor:
    """Plausible value distributions to fit the untrained scalar codecs on (not real survey statistics)."""
    n = 20_000
    if name.startswith("FLUX"):
        return torch.exp(torch.randn(n, generator=generator) * 1.5 + 1.0) - 0.5
    if name.startswith("phot_"):
        return torch.exp(torch.randn(n, generator=generator) * 1.5 + 8.0)
    if name == "parallax":
        return torch.exp(torch.randn(n, generator=generator))
    if name == "SHAPE_R":
        return torch.exp(torch.randn(n, generator=generator) * 0.7)
    if name == "EBV":
        return torch.rand(n, generator=generator) * 0.2
    return torch.randn(n, generator=generator) * 0.2  # ellipticities


def build_untrained_checkpoint(directory: str | Path, seed: int = DEMO_SEED) -> Path:
    """Writes a small random-weight checkpoint in the aion-base layout; same seed, same tensors and configs.

    Args:
        directory: output directory (created).
        seed: torch seed for every weight and every synthetic draw.

    Returns:
        The directory.
    """
    from aion_fast.codecs.image import ImageCodec
    from aion_fast.codecs.scalar import GridScalarCodec, LogScalarCodec, MultiScalarCodec, ScalarCodec
    from aion_fast.codecs.spectrum import SpectrumCodec
    from aion_fast.model import AION, architecture

    directory = Path(directory)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    SpectrumCodec(**DEMO_SPECTRUM_CODEC).save_pretrained(directory, modality=m.DESISpectrum)
    for name, modality in PHOTOMETRY.items():
        if name in ("SHAPE_E1", "SHAPE_E2", "EBV"):
            codec = ScalarCodec(name, codebook_size=1024, reservoir_size=10_000)
        else:
            codec = LogScalarCodec(name, codebook_size=1024, reservoir_size=10_000)
        codec.quantizer.update(_synthetic_scalar_draws(name, generator), generator=generator)
        codec.save_pretrained(directory, modality=modality)
    GridScalarCodec("Z", codebook_size=1024).save_pretrained(directory, modality=m.Z)
    ImageCodec(**DEMO_IMAGE_CODEC).save_pretrained(directory, modality=m.LegacySurveyImage)
    for name, modality in EXTRA_SCALARS.items():
        codec = LogScalarCodec(name, codebook_size=1024, reservoir_size=10_000)
        codec.quantizer.update(_synthetic_scalar_draws(name, generator), generator=generator)
        codec.save_pretrained(directory, modality=modality)
    for modality in (m.GaiaXpBp, m.GaiaXpRp):
        codec = MultiScalarCodec(modality.name, ["arcsinh"], ["sinh"], 1024, 2_000, 55)
        codec.quantizer.update(torch.randn(4_000, 55, generator=generator) * torch.logspace(2, -1, 55),
                               generator=generator)  # fmt: skip
        codec.save_pretrained(directory, modality=modality)
    scalars = [*PHOTOMETRY.values(), *EXTRA_SCALARS.values(), m.GaiaXpBp, m.GaiaXpRp, m.Z]
    domains = sorted([m.DESISpectrum.token_key, m.LegacySurveyImage.token_key, *(mod.token_key for mod in scalars)])
    model = AION(architecture(domains, domains, **DEMO_TRANSFORMER))
    model.save_pretrained(directory)
    (directory / "DEMO_CHECKPOINT.md").write_text(
        f"UNTRAINED aion_fast demo checkpoint: random weights from torch seed {seed}. Its embeddings carry no science; "
        f"it exists to run the pipeline end to end offline.\n"
    )
    return directory


def default_checkpoint_dir() -> Path:
    """Cache location of the demo checkpoint."""
    return Path.home() / ".cache" / "aion_fast" / f"demo-untrained-seed{DEMO_SEED}-v2"


def ensure_demo_checkpoint(directory: str | Path | None = None) -> Path:
    """Returns the demo checkpoint directory, generating it on first use."""
    directory = Path(directory) if directory is not None else default_checkpoint_dir()
    if not (directory / "model.safetensors").is_file():
        build_untrained_checkpoint(directory)
    return directory
