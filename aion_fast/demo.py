"""The bundled end-to-end demo: a small UNTRAINED checkpoint generated from a fixed seed, and the encoding of the
real DESI EDR spectra (with their Legacy Survey photometry) shipped in ``aion_fast/data/sample``.

The checkpoint exercises the real code paths (hub layout, codecs, transformer, pooling) but its weights are random:
the embeddings it produces carry no science. Pass a trained checkpoint with ``--model`` for real embeddings.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
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


#: The trained demo model shipped in the package (built by scripts/train_demo.sh from configs/aion-demo.yaml).
BUNDLED_DEMO_MODEL = Path(__file__).parent / "data" / "demo_model"
#: How outputs name the bundled demo model.
DEMO_MODEL_LABEL = "aion_fast-demo (trained on the 27-object bundled sample; NOT AION-1 science quality)"


def default_model() -> tuple[Path, str]:
    """The checkpoint a job uses when no ``--model`` is given, and the label its outputs carry.

    Returns:
        ``(directory, label)``: the bundled trained demo model when the package has it, else the untrained seed-0
        checkpoint (generated on first use) labelled ``"untrained-demo"``.
    """
    if (BUNDLED_DEMO_MODEL / "model.safetensors").is_file():
        return BUNDLED_DEMO_MODEL, DEMO_MODEL_LABEL
    return ensure_demo_checkpoint(), "untrained-demo"


def default_checkpoint_dir() -> Path:
    """Cache location of the demo checkpoint."""
    return Path.home() / ".cache" / "aion_fast" / f"demo-untrained-seed{DEMO_SEED}-v2"


def ensure_demo_checkpoint(directory: str | Path | None = None) -> Path:
    """Returns the demo checkpoint directory, generating it on first use."""
    directory = Path(directory) if directory is not None else default_checkpoint_dir()
    if not (directory / "model.safetensors").is_file():
        build_untrained_checkpoint(directory)
    return directory


def checkpoint_digest(directory: str | Path) -> str:
    """SHA-256 (16 hex digits) of every tensor of a checkpoint, by file and name.

    Hashes tensor contents rather than file bytes: safetensors writes its header's metadata in no fixed order.
    """
    from safetensors.numpy import load_file

    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*.safetensors")):
        try:
            tensors = load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for a torn file
            if isinstance(error, OSError):
                raise
            raise ValueError(f"{path} is not a complete safetensors file ({error}); download it again.") from None
        for name, array in sorted(tensors.items()):
            digest.update(f"{path.relative_to(directory)}:{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def run_demo(output: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Encodes the bundled DESI sample (spectrum + photometry) and writes mean-pooled embeddings to Parquet.

    Args:
        output: directory for ``embeddings.parquet`` and ``summary.json``.
        model_dir: checkpoint to use; default: the untrained demo checkpoint (generated on first use).

    Returns:
        The summary dict (also written to ``summary.json``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aion_fast.codecs import CodecManager
    from aion_fast.data.desi import load_desi_sample
    from aion_fast.embedding import embed
    from aion_fast.model import AION

    untrained = model_dir is None
    checkpoint = ensure_demo_checkpoint() if untrained else Path(model_dir)
    start = time.perf_counter()
    spectrum, photometry = load_desi_sample()
    model = AION.from_pretrained(checkpoint).eval()
    codecs = CodecManager(repo=checkpoint, device="cpu")
    tokens = codecs.encode(spectrum)
    input_mask: dict[str, torch.Tensor] = {}
    used = [["spectrum"] for _ in range(spectrum.batch_size)]
    for column, modality in PHOTOMETRY.items():
        if column not in photometry:
            continue
        values = torch.as_tensor(np.asarray(photometry[column], dtype=np.float32))
        measured = torch.isfinite(values)
        if not bool(measured.any()):
            continue
        filled = torch.where(measured, values, values[measured][0])
        tokens[modality.token_key] = codecs.encode(modality(value=filled))[modality.token_key]
        input_mask[modality.token_key] = ~measured[:, None]
        for row in torch.nonzero(measured).flatten().tolist():
            used[row].append(column)
    vectors = embed(model, tokens, pooling="mean", input_mask=input_mask)
    elapsed = time.perf_counter() - start

    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "object_id": pa.array(np.asarray(photometry["TARGETID"], dtype=np.int64)),
            "ra": pa.array(np.asarray(photometry.get("TARGET_RA", np.full(len(used), np.nan)), dtype=np.float64)),
            "dec": pa.array(np.asarray(photometry.get("TARGET_DEC", np.full(len(used), np.nan)), dtype=np.float64)),
            "modalities": pa.array(used, type=pa.list_(pa.string())),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.float().numpy().reshape(-1)), vectors.shape[1]
            ),
        }
    )
    tmp = out_dir / "embeddings.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out_dir / "embeddings.parquet")
    summary = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256_16": checkpoint_digest(checkpoint),
        "untrained_demo_checkpoint": untrained,
        "objects_encoded": int(vectors.shape[0]),
        "tokens_per_object": {k: int(v.shape[-1]) if v.ndim > 1 else 1 for k, v in tokens.items()},
        "embedding_dim": int(vectors.shape[1]),
        "wall_s": round(elapsed, 3),
        "objects_per_s": round(vectors.shape[0] / elapsed, 3),
        "output": str(out_dir / "embeddings.parquet"),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
