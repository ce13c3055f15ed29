r"""Training the codecs (tokenizers) on Multimodal Universe files: image and spectrum autoencoders, scalar CDFs.

Losses (AION-1 paper §4.1.3, §4.2.3):

* **Image codec**: the inverse-variance weighted Gaussian negative log-likelihood over unmasked pixels (eq. 1),

  .. math:: \mathcal L_\text{NLL} = \frac{1}{\sum_p m_p} \sum_p \tfrac12\, m_p\, v_p\, (x_p - \hat x_p)^2,

  with :math:`x` the cut-out in native flux units after the codec's crop and per-band clip, :math:`v` the pipeline's
  inverse variance (``image_ivar``), :math:`m` the good-pixel mask (``image_mask``, True = good) and :math:`\hat x`
  the reconstruction with the arcsinh compression (and the HSC zero-point rescale) inverted, as the paper does before
  computing the loss. The quantizer is the codec's FSQ with straight-through gradients. The sum of eq. (1) is divided
  by the number of unmasked pixels (a per-pixel mean), so the value does not grow with the batch or the stamp size.
* **Spectrum codec**: the decoder output is interpolated back to each spectrum's own wavelengths, rescaled by the
  normalisation token's level :math:`n` to native flux units (:math:`\hat f = (y + 1)\,n`), and scored with the same
  ivar-weighted NLL over pixels that ``spectrum_mask`` marks good and that lie on the latent grid; plus the binary
  cross-entropy between the decoder's mask logits and ``spectrum_mask`` (True = bad) when the decoder has a second
  output channel (``decoder_dims[-1] == 2``), and the lookup-free quantizer's commitment (weight 0.25) and entropy
  terms (:meth:`aion_fast.quantizers.LookupFreeQuantizer.losses`).
* **Scalar codecs**: no loss. Each codec's reservoir quantizer streams every finite value of its column through
  Algorithm R (:meth:`aion_fast.quantizers.ScalarReservoirQuantizer.update`), reading the files in HDF5-chunk-aligned
  row ranges. With a reservoir of ``k`` uniform draws, the Dvoretzky-Kiefer-Wolfowitz inequality bounds the error of
  every fitted quantile in probability: :math:`P(\sup_x |F_k(x) - F(x)| > \varepsilon) \le 2 e^{-2 k \varepsilon^2}`
  (:func:`reservoir_quantile_error`). When fewer values than ``k`` exist, the reservoir is filled with the values'
  own quantiles instead of keeping its default slots, so the fitted CDF is the data's (the reference leaves the
  default values in, which piles codes on ``reservoir_default``).

Optimisation: AdamW (no weight decay on biases and normalisation weights, i.e. parameters with fewer than 2 dims),
linear warm-up then cosine decay (or a constant rate), optional gradient clipping and bf16 autocast. Runs are
deterministic given the seed (weights initialised after ``torch.manual_seed(seed)``, data order from a generator of
that seed). Checkpoint/resume of codec training is not implemented: a run trains from scratch for ``steps`` steps.

Outputs are written in the hub layout (``codecs/<modality name>/config.json`` + ``model.safetensors``) through a
temporary folder renamed into place, so :class:`~aion_fast.codecs.CodecManager` and ``AION`` checkpoints load them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aion_fast import modalities as m
from aion_fast.codecs.base import Codec
from aion_fast.codecs.preprocessing import CROP_SIZE, clamp_bounds, survey_bands
from aion_fast.data.mmu import MMUFile, crop_window, prepare_rows, row_ranges

__all__ = [
    "IMAGE_COLUMNS",
    "SPECTRUM_COLUMNS",
    "ImageBatch",
    "TrainingConfig",
    "fit_scalar_codecs",
    "gaussian_nll",
    "image_codec_losses",
    "image_latents",
    "image_reconstruction",
    "load_config",
    "mask_bce",
    "reservoir_quantile_error",
    "save_codecs",
    "spectrum_codec_losses",
    "demo_codec_configs",
    "demo_scalar_specs",
    "learning_rate_factor",
    "sample_files",
    "train_codec",
    "train_demo_codecs",
    "train_image_codec",
    "train_spectrum_codec",
]

#: Columns an MMU file must have to train the image codec (``image_mask``: True = good pixel).
IMAGE_COLUMNS = ("image_array", "image_band", "image_ivar", "image_mask")
#: Columns an MMU file must have to train the spectrum codec (``spectrum_mask``: True = bad pixel).
SPECTRUM_COLUMNS = ("spectrum_flux", "spectrum_ivar", "spectrum_lambda", "spectrum_mask")

_IMAGE_CLASSES: dict[str, type[m.Image]] = {"DES": m.LegacySurveyImage, "HSC": m.HSCImage}

# ---------------------------------------------------------------------------------------------------------- losses


def gaussian_nll(prediction: Tensor, target: Tensor, ivar: Tensor, valid: Tensor, reduction: str = "mean") -> Tensor:
    r"""Inverse-variance weighted Gaussian NLL over valid entries (paper eq. 1, constant terms dropped).

    .. math:: \mathcal L = \frac{1}{N_\text{valid}} \sum_{p:\ \text{valid}_p} \tfrac12\, v_p\, (t_p - y_p)^2

    Invalid entries contribute nothing, whatever their values (NaN included), and get zero gradient.

    Args:
        prediction: (...) reconstruction :math:`y` (computed in float32).
        target: (...) data :math:`t`, same shape.
        ivar: (...) inverse variance :math:`v \ge 0`, same shape.
        valid: (...) bool, True where the pixel counts (good and measured).
        reduction: ``"mean"`` (divide by the number of valid entries; 0 when there are none) or ``"sum"``.

    Returns:
        scalar float32 tensor.
    """
    if not (prediction.shape == target.shape == ivar.shape == valid.shape):
        raise ValueError(
            f"gaussian_nll: prediction {tuple(prediction.shape)}, target {tuple(target.shape)}, ivar "
            f"{tuple(ivar.shape)} and valid {tuple(valid.shape)} must have one shape."
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"gaussian_nll: reduction must be 'mean' or 'sum', got {reduction!r}.")
    valid = valid.bool()
    target = torch.where(valid, target.float(), 0.0)
    weight = torch.where(valid, ivar.float(), 0.0)
    prediction = torch.where(valid, prediction.float(), 0.0)
    total = 0.5 * (weight * (target - prediction).square()).sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp_min(1)


def mask_bce(logits: Tensor, bad: Tensor, valid: Tensor | None = None, reduction: str = "mean") -> Tensor:
    r"""Binary cross-entropy between predicted mask logits and the pipeline mask (paper §4.2.3, loss 2).

    .. math:: \mathcal L = -\frac{1}{N} \sum_p \bigl[m_p \log \sigma(\ell_p) + (1 - m_p) \log(1 - \sigma(\ell_p))\bigr]

    Args:
        logits: (...) decoder mask logits :math:`\ell`.
        bad: (...) bool mask :math:`m`, True = bad pixel (the MMU ``spectrum_mask`` convention).
        valid: optional (...) bool; only these entries count (e.g. pixels on the latent grid).
        reduction: ``"mean"`` over counted entries, or ``"sum"``.

    Returns:
        scalar float32 tensor.
    """
    if logits.shape != bad.shape or (valid is not None and valid.shape != bad.shape):
        raise ValueError(f"mask_bce: logits {tuple(logits.shape)} and mask {tuple(bad.shape)} must have one shape.")
    terms = F.binary_cross_entropy_with_logits(logits.float(), bad.float(), reduction="none")
    if valid is not None:
        terms = torch.where(valid, terms, 0.0)
    count = terms.numel() if valid is None else valid.sum().clamp_min(1)
    return terms.sum() if reduction == "sum" else terms.sum() / count


def reservoir_quantile_error(reservoir_size: int, failure_probability: float = 1e-6) -> float:
    r"""Bound on the CDF error of a reservoir of ``k`` uniform draws (Dvoretzky-Kiefer-Wolfowitz).

    With probability at least ``1 - failure_probability``, every quantile fitted from the reservoir lies at a true
    CDF level within :math:`\varepsilon = \sqrt{\ln(2/\delta) / (2k)}` of its nominal level (exact when the data
    hold at most ``k`` values, up to linear interpolation).
    """
    return math.sqrt(math.log(2.0 / failure_probability) / (2.0 * reservoir_size))


# ------------------------------------------------------------------------------------------------------------ data


@dataclass
class ImageBatch:
    """Cut-outs of one survey, ready for the image codec and its loss.

    Attributes:
        flux: (B, C, 96, 96) float32 native fluxes; non-finite values replaced by 0 (finite bad pixels are kept,
            as the codec sees them at inference).
        ivar: (B, C, 96, 96) float32 inverse variances, 0 at bad pixels.
        good: (B, C, 96, 96) bool, True where the pixel enters the loss (``image_mask`` good, finite, ivar >= 0).
        bands: the C band names of one survey in the codec's order.
    """

    flux: Tensor
    ivar: Tensor
    good: Tensor
    bands: list[str]

    @property
    def modality_class(self) -> type[m.Image]:
        return _IMAGE_CLASSES[self.bands[0].split("-")[0]]

    def to(self, device: torch.device) -> ImageBatch:
        return ImageBatch(self.flux.to(device), self.ivar.to(device), self.good.to(device), self.bands)


def _require_columns(source: MMUFile, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if not source.has(c)]
    if missing:
        raise ValueError(
            f"{source.path}: missing column(s) {missing} needed to train the {what} codec (it needs {list(columns)}); "
            f"pass MMU {what} files (e.g. legacysurvey/ or hsc/ for images, desi/ or sdss/ for spectra)."
        )


def _read_image_records(source: MMUFile, start: int, stop: int) -> list[tuple]:
    """Rows [start, stop) -> (survey, flux, ivar, good) per usable object, each (C, 96, 96) in codec band order."""
    flux = np.asarray(source.read("image_array", start, stop), dtype=np.float32)
    if flux.ndim != 4:
        raise ValueError(f"{source.path}: image_array must be (N, C, H, W), got shape {flux.shape}.")
    ivar = np.asarray(source.read("image_ivar", start, stop), dtype=np.float32)
    if ivar.shape != flux.shape:
        raise ValueError(
            f"{source.path}: image_ivar has shape {ivar.shape} but image_array {flux.shape}; one inverse variance per "
            f"pixel and band is needed."
        )
    good = np.asarray(source.read("image_mask", start, stop), dtype=bool)
    good = good[:, None] if good.ndim == 3 else good
    if good.ndim != 4 or good.shape[2:] != flux.shape[2:] or good.shape[1] not in (1, flux.shape[1]):
        raise ValueError(
            f"{source.path}: image_mask must be (N, H, W) or (N, C, H, W) like image_array {flux.shape}, got "
            f"{good.shape}."
        )
    n = stop - start
    band_column = source.dataset("image_band")
    bands = np.asarray(band_column[start:stop] if band_column.ndim == 2
                       else np.broadcast_to(band_column[()], (n, flux.shape[1])))  # fmt: skip
    top, left = crop_window(*flux.shape[2:], what=f"{source.path}: image_array")
    window = (slice(None), slice(None), slice(top, top + CROP_SIZE), slice(left, left + CROP_SIZE))
    flux, ivar = flux[window], ivar[window]
    good = np.broadcast_to(good[window], flux.shape)
    records = []
    for row in range(n):
        names = [(b.decode() if isinstance(b, bytes) else str(b)).upper() for b in bands[row].reshape(-1)]
        survey = names[0].split("-")[0] if names else ""
        expected = survey_bands(survey) if survey in _IMAGE_CLASSES else None
        if expected is None or sorted(names) != sorted(expected):
            raise ValueError(
                f"{source.path} row {start + row}: image_band {names} is not one survey's band set; the image codec "
                f"trains on DES-G/R/I/Z (Legacy Survey) or HSC-G/R/I/Z/Y images, each band once. Fix the file's "
                f"image_band column or leave this file out."
            )
        order = [names.index(b) for b in expected]
        row_flux, row_ivar = flux[row][order], ivar[row][order]
        row_good = good[row][order] & np.isfinite(row_flux) & np.isfinite(row_ivar) & (row_ivar >= 0)
        if not row_good.any():
            continue  # nothing to learn from this object
        row_flux = np.where(np.isfinite(row_flux), row_flux, 0.0).astype(np.float32)
        row_ivar = np.where(row_good, row_ivar, 0.0).astype(np.float32)
        records.append((survey, row_flux, row_ivar, np.ascontiguousarray(row_good)))
    return records


def _read_spectrum_records(source: MMUFile, start: int, stop: int) -> list[tuple]:
    """Rows [start, stop) -> (class, flux, ivar, mask, wavelength) per usable spectrum (padding cut, 1-D tensors).

    Uses :func:`aion_fast.data.mmu.prepare_rows`, so spectra are cleaned exactly as for encoding; rows it refuses
    (every pixel masked, non-increasing wavelengths, NaN at good pixels) are skipped.
    """
    records = []
    for part in prepare_rows(source, start, stop, ["spectrum"]).parts:
        s = part.modality
        for i in range(s.batch_size):
            records.append((type(s), s.flux[i], s.ivar[i], s.mask[i], s.wavelength[i]))
    return records


class _RecordStream:
    """Endless, seeded, shuffled stream of per-object records read from MMU files in HDF5-chunk-aligned row ranges.

    Each epoch visits the row ranges in a random order; records are shuffled within a buffer of about
    ``shuffle_rows`` objects (a full shuffle when the data fit in the buffer).
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        columns: Sequence[str],
        reader: Callable[[MMUFile, int, int], list[tuple]],
        what: str,
        read_rows: int = 256,
    ):
        files = [str(f) for f in files]
        if not files:
            raise ValueError(f"no input files: pass the MMU .hdf5 files to train the {what} codec on (--data).")
        for path in files:
            if not Path(path).is_file():
                raise ValueError(f"--data {path}: no such file.")
        self.files, self.what, self.reader = files, what, reader
        self.sources: list[MMUFile] = []
        try:
            for path in files:
                source = MMUFile(path)
                self.sources.append(source)
                _require_columns(source, columns, what)
        except BaseException:
            self.close()
            raise
        self.ranges = [
            (i, start, stop)
            for i, source in enumerate(self.sources)
            for start, stop in row_ranges(source.num_rows, read_rows, align=source.chunk_rows())
        ]
        if not self.ranges:
            self.close()
            raise ValueError(f"the {what} files {files} hold no rows; nothing to train on.")

    def close(self) -> None:
        for source in self.sources:
            source.close()

    def records(self, generator: torch.Generator, shuffle_rows: int) -> Iterator[tuple]:
        def shuffled(buffer: list[tuple]) -> list[tuple]:
            return [buffer[i] for i in torch.randperm(len(buffer), generator=generator).tolist()]

        while True:
            produced, buffer = 0, []
            for index in torch.randperm(len(self.ranges), generator=generator).tolist():
                i, start, stop = self.ranges[index]
                buffer.extend(self.reader(self.sources[i], start, stop))
                if len(buffer) >= shuffle_rows:
                    produced += len(buffer)
                    yield from shuffled(buffer)
                    buffer = []
            produced += len(buffer)
            yield from shuffled(buffer)
            if produced == 0:
                raise ValueError(
                    f"no usable {self.what} in {self.files}: every object was skipped (all pixels masked, or "
                    f"non-finite values everywhere); check the masks' convention (image_mask True = good, "
                    f"spectrum_mask True = bad)."
                )


def _collate_images(records: Sequence[tuple]) -> list[ImageBatch]:
    """Records -> one :class:`ImageBatch` per survey, in order of first appearance."""
    by_survey: dict[str, list[tuple]] = {}
    for record in records:
        by_survey.setdefault(record[0], []).append(record)
    return [
        ImageBatch(*(torch.from_numpy(np.stack([r[k] for r in group])) for k in (1, 2, 3)), bands=survey_bands(survey))
        for survey, group in by_survey.items()
    ]


def _collate_spectra(records: Sequence[tuple]) -> list[m.Spectrum]:
    """Records -> one Spectrum batch per (class, length), in order of first appearance."""
    groups: dict[tuple[type, int], list[tuple]] = {}
    for record in records:
        groups.setdefault((record[0], record[1].shape[0]), []).append(record)
    return [
        cls(
            **{
                name: torch.stack([r[k] for r in group])
                for k, name in enumerate(("flux", "ivar", "mask", "wavelength"), 1)
            }
        )
        for (cls, _), group in groups.items()
    ]


def _spectrum_to(spectrum: m.Spectrum, device: torch.device) -> m.Spectrum:
    return type(spectrum)(**{f.name: getattr(spectrum, f.name).to(device) for f in dataclasses.fields(spectrum)})


# ------------------------------------------------------------------------------------------------ forward + losses


def image_latents(codec: Codec, batch: ImageBatch) -> Tensor:
    """Differentiable encoder of the image codec: ``encode_latents(preprocess(image))``, (B, embedding_dim, N)."""
    image = batch.modality_class(flux=batch.flux, bands=batch.bands)
    return codec.encode_latents(codec.preprocess(image))


def image_reconstruction(codec: Codec, quantized: Tensor, bands: Sequence[str]) -> Tensor:
    """Differentiable decoder of the image codec: ``postprocess(decode_latents(q), bands).flux``, (B, C, 96, 96)
    in the survey's native units."""
    return codec.postprocess(codec.decode_latents(quantized), bands=list(bands)).flux


def image_codec_losses(codec: Codec, batches: Sequence[ImageBatch]) -> dict[str, Tensor]:
    """Training forward of the image codec: encode, straight-through FSQ, decode, weighted NLL (eq. 1).

    Surveys go through the encoder separately (each has its band set) and are quantized together.

    Args:
        codec: an :class:`~aion_fast.codecs.image.ImageCodec` (in train mode to learn).
        batches: one :class:`ImageBatch` per survey, on the codec's device.

    Returns:
        dict with ``loss`` (the NLL, differentiable), ``nll`` and ``codebook_usage`` (fraction of codes used).
    """
    if not batches:
        raise ValueError("image_codec_losses: no image batch given.")
    latents = [image_latents(codec, batch) for batch in batches]  # (B_i, D, N)
    z = torch.cat(latents)
    quantized = codec.quantizer.quantize(z, channel_first=True)
    total = z.new_zeros((), dtype=torch.float32)
    count = 0
    for batch, q in zip(batches, quantized.split([lat.shape[0] for lat in latents])):
        reconstruction = image_reconstruction(codec, q, batch.bands)
        bounds = clamp_bounds(batch.bands, batch.flux.device)
        target = torch.clamp(batch.flux, -bounds, bounds)  # what the codec can represent (its input is clipped)
        total = total + gaussian_nll(reconstruction, target, batch.ivar, batch.good, reduction="sum")
        count += int(batch.good.sum())
    nll = total / max(count, 1)
    with torch.no_grad():  # distinct codes = distinct rounded level tuples of the quantized latents
        levels = quantized.detach().movedim(1, -1).reshape(-1, quantized.shape[1])
        used = torch.unique(torch.round(levels * (codec.quantizer.levels // 2).to(levels)), dim=0).shape[0]
    return {"loss": nll, "nll": nll.detach(), "codebook_usage": torch.tensor(used / codec.quantizer.codebook_size)}


def spectrum_codec_losses(
    codec: Codec, batches: Sequence[m.Spectrum], mask_loss_weight: float = 1.0, quantizer_loss_weight: float = 1.0
) -> dict[str, Tensor]:
    """Training forward of the spectrum codec: flux NLL + mask BCE + LFQ commitment/entropy (paper §4.2.3).

    The decoder output is interpolated to each spectrum's own wavelengths and brought back to native flux units
    with the normalisation token's level before the NLL; pixels off the latent grid are not scored.

    Args:
        codec: a :class:`~aion_fast.codecs.spectrum.SpectrumCodec` (in train mode to learn).
        batches: spectra on the codec's device, one batch per (survey, length).
        mask_loss_weight: weight of the mask BCE (used when the decoder has a mask channel).
        quantizer_loss_weight: weight of the quantizer's auxiliary loss (itself 0.25 commitment + 0.1 entropy).

    Returns:
        dict with ``loss`` (differentiable), ``flux_nll``, ``mask_bce`` (0 without a mask channel),
        ``commitment``, ``per_sample_entropy``, ``codebook_entropy``, ``quantizer_loss``, ``codebook_usage``.
    """
    if not batches:
        raise ValueError("spectrum_codec_losses: no spectrum batch given.")
    from aion_fast.codecs.spectrum import SpectrumLatents

    latents = [codec.encode_latents(codec.preprocess(s)) for s in batches]  # (B_i, E, T) + normalisation tokens
    terms = codec.quantizer.losses(torch.cat([lat.latents for lat in latents]), channel_first=True)
    normalization = torch.cat([lat.normalization for lat in latents])
    decoded = codec.decode_latents(SpectrumLatents(terms["quantized"], normalization)).values  # (B, 1 or 2, G)
    grid = codec.latent_grid.wavelength
    nll_sum = bce_sum = decoded.new_zeros((), dtype=torch.float32)
    nll_count = bce_count = 0
    for spectrum, lat, out in zip(batches, latents, decoded.split([s.batch_size for s in batches])):
        wavelength = spectrum.wavelength.to(torch.float32)
        observed = codec.latent_grid.to_observed(out.float(), wavelength)  # (B_i, 1 or 2, L), logits kept
        prediction = (observed[:, 0] + 1.0) * codec.flux_scale(lat.normalization)[:, None]
        on_grid = (wavelength >= grid[0]) & (wavelength <= grid[-1])
        flux, ivar = spectrum.flux.to(torch.float32), spectrum.ivar.to(torch.float32)
        good = ~spectrum.mask & on_grid & torch.isfinite(flux) & torch.isfinite(ivar)
        nll_sum = nll_sum + gaussian_nll(prediction, flux, ivar.clamp_min(0.0), good, reduction="sum")
        nll_count += int(good.sum())
        if observed.shape[1] == 2:
            bce_sum = bce_sum + mask_bce(observed[:, 1], spectrum.mask, on_grid, reduction="sum")
            bce_count += int(on_grid.sum())
    flux_nll = nll_sum / max(nll_count, 1)
    bce = bce_sum / max(bce_count, 1)
    loss = flux_nll + mask_loss_weight * bce + quantizer_loss_weight * terms["loss"]
    used = torch.unique(terms["indices"]).numel() / codec.quantizer.codebook_size
    return {
        "loss": loss,
        "flux_nll": flux_nll.detach(),
        "mask_bce": bce.detach(),
        "commitment": terms["commitment"].detach(),
        "per_sample_entropy": terms["per_sample_entropy"].detach(),
        "codebook_entropy": terms["codebook_entropy"].detach(),
        "quantizer_loss": terms["loss"].detach(),
        "codebook_usage": torch.tensor(used),
    }


# --------------------------------------------------------------------------------------------------------- training


@dataclass
class TrainingConfig:
    """Optimisation settings of an image or spectrum codec run (the ``training:`` section of the YAML).

    Attributes:
        steps: optimizer steps.
        batch_size: objects per step (all surveys together).
        learning_rate: peak learning rate.
        weight_decay: AdamW decay of weight matrices/kernels (biases and norm weights are not decayed).
        betas: AdamW betas.
        warmup_steps: linear warm-up steps from ``learning_rate / warmup_steps``.
        schedule: ``"cosine"`` (decay to ``min_lr_ratio * learning_rate`` at ``steps``) or ``"constant"``.
        min_lr_ratio: final learning rate of the cosine, relative to the peak.
        grad_clip: global gradient-norm clip, or None.
        bf16: run the networks under bfloat16 autocast (quantizers and losses stay float32).
        seed: seeds the weights and the data order.
        shuffle_rows: objects per shuffle buffer.
        read_rows: rows per read (rounded up to the files' HDF5 chunks).
        log_every: steps between log records.
        device: torch device.
        mask_loss_weight: spectrum codec: weight of the mask BCE.
        quantizer_loss_weight: spectrum codec: weight of the LFQ commitment + entropy loss.
    """

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    bf16: bool = False
    seed: int = 0
    shuffle_rows: int = 4096
    read_rows: int = 256
    log_every: int = 10
    device: str = "cpu"
    mask_loss_weight: float = 1.0
    quantizer_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        problems = []
        for name in ("steps", "batch_size", "shuffle_rows", "read_rows", "log_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                problems.append(f"{name}={getattr(self, name)!r} must be an integer >= 1")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            problems.append(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if not float(self.learning_rate) > 0:
            problems.append(f"learning_rate={self.learning_rate!r} must be > 0")
        if float(self.weight_decay) < 0:
            problems.append(f"weight_decay={self.weight_decay!r} must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas={self.betas!r} must be two numbers in [0, 1)")
        if self.schedule not in ("cosine", "constant"):
            problems.append(f"schedule={self.schedule!r} must be 'cosine' or 'constant'")
        if not 0 <= float(self.min_lr_ratio) <= 1:
            problems.append(f"min_lr_ratio={self.min_lr_ratio!r} must lie in [0, 1]")
        if self.grad_clip is not None and not float(self.grad_clip) > 0:
            problems.append(f"grad_clip={self.grad_clip!r} must be > 0 or null")
        if problems:
            raise ValueError("invalid training configuration:\n  - " + "\n  - ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainingConfig:
        """Builds the config from a mapping (the YAML ``training:`` section); unknown keys raise ``ValueError``."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; valid settings are {sorted(known)}.")
        return cls(**values)


def learning_rate_factor(step: int, config: TrainingConfig) -> float:
    """Multiplier of the peak learning rate for the update of 0-based ``step``: linear warm-up, then cosine/constant."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _parameter_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for parameter in module.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_codec(
    codec: Codec,
    batches: Iterator[list],
    loss_fn: Callable[[Codec, list], dict[str, Tensor]],
    config: TrainingConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Optimises ``codec`` for ``config.steps`` steps with AdamW and the warm-up + cosine schedule.

    Args:
        codec: the codec to train (moved to ``config.device``, left in eval mode at the end).
        batches: yields the next step's list of sub-batches (already on the device).
        loss_fn: ``(codec, sub_batches) -> dict`` with a differentiable ``loss`` and float diagnostics.
        config: the optimisation settings.
        log: called with the record of every ``log_every``-th step and of the last one.

    Returns:
        One record per step: ``step``, ``lr``, ``grad_norm``, ``elapsed_s`` and every entry of the loss dict.

    Raises:
        FloatingPointError: the loss became NaN/inf (the step is named).
    """
    device = torch.device(config.device)
    codec.to(device).train()
    optimizer = torch.optim.AdamW(
        _parameter_groups(codec, float(config.weight_decay)), lr=float(config.learning_rate), betas=config.betas
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, config))
    parameters = [p for p in codec.parameters() if p.requires_grad]
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    for step in range(config.steps):
        batch = next(batches)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16):
            terms = loss_fn(codec, batch)
        loss = terms["loss"]
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"codec training step {step + 1}: the loss is {float(loss)}; lower training.learning_rate, set "
                f"training.grad_clip, or check the inputs' inverse variances."
            )
        learning_rate = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = float(config.grad_clip) if config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        optimizer.step()
        scheduler.step()
        record = {"step": step + 1, "lr": learning_rate, "grad_norm": float(grad_norm)}
        record.update({name: float(value.detach()) for name, value in terms.items()})
        record["elapsed_s"] = round(time.perf_counter() - start, 3)
        history.append(record)
        if log is not None and (step % config.log_every == 0 or step == config.steps - 1):
            log(record)
    codec.eval()
    return history


def _batches(stream: _RecordStream, collate: Callable, move: Callable, config: TrainingConfig) -> Iterator[list]:
    generator = torch.Generator().manual_seed(config.seed)
    records = stream.records(generator, config.shuffle_rows)
    device = torch.device(config.device)
    while True:
        yield [move(b, device) for b in collate([next(records) for _ in range(config.batch_size)])]


def _build_codec(codec_class: type[Codec], codec_config: dict[str, Any], seed: int) -> Codec:
    torch.manual_seed(seed)
    try:
        return codec_class(**dict(codec_config))
    except TypeError as error:
        raise ValueError(f"the codec: section does not fit {codec_class.__name__}: {error}") from error


def train_image_codec(
    files: Sequence[str | os.PathLike],
    codec_config: dict[str, Any],
    config: TrainingConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Codec, list[dict[str, Any]]]:
    """Trains an :class:`~aion_fast.codecs.image.ImageCodec` from scratch on MMU Legacy Survey/HSC files.

    Args:
        files: MMU files with ``image_array``, ``image_band``, ``image_ivar`` and ``image_mask`` (True = good).
        codec_config: ``ImageCodec`` constructor arguments (written to ``codecs/image/config.json``).
        config: optimisation settings.
        log: progress callback (see :func:`train_codec`).

    Returns:
        (the trained codec in eval mode, the per-step history).
    """
    from aion_fast.codecs.image import ImageCodec

    stream = _RecordStream(files, IMAGE_COLUMNS, _read_image_records, "image", config.read_rows)
    try:
        codec = _build_codec(ImageCodec, codec_config, config.seed)
        batches = _batches(stream, _collate_images, ImageBatch.to, config)
        history = train_codec(codec, batches, image_codec_losses, config, log)
    finally:
        stream.close()
    return codec, history


def train_spectrum_codec(
    files: Sequence[str | os.PathLike],
    codec_config: dict[str, Any],
    config: TrainingConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Codec, list[dict[str, Any]]]:
    """Trains a :class:`~aion_fast.codecs.spectrum.SpectrumCodec` from scratch on MMU DESI/SDSS files.

    Args:
        files: MMU files with ``spectrum_flux``, ``spectrum_ivar``, ``spectrum_lambda`` and ``spectrum_mask``
            (True = bad).
        codec_config: ``SpectrumCodec`` constructor arguments; ``decoder_dims[-1] = 2`` adds the mask head that the
            BCE trains (with 1, only flux is reconstructed and the BCE term is 0).
        config: optimisation settings.
        log: progress callback (see :func:`train_codec`).

    Returns:
        (the trained codec in eval mode, the per-step history).
    """
    from aion_fast.codecs.spectrum import SpectrumCodec

    stream = _RecordStream(files, SPECTRUM_COLUMNS, _read_spectrum_records, "spectrum", config.read_rows)
    try:
        codec = _build_codec(SpectrumCodec, codec_config, config.seed)

        def losses(codec: Codec, batch: list) -> dict[str, Tensor]:
            return spectrum_codec_losses(codec, batch, config.mask_loss_weight, config.quantizer_loss_weight)

        batches = _batches(stream, _collate_spectra, _spectrum_to, config)
        history = train_codec(codec, batches, losses, config, log)
    finally:
        stream.close()
    return codec, history


# ----------------------------------------------------------------------------------------------------------- scalars


def _scalar_modality(key: str) -> type[m.Scalar]:
    """A scalar modality by class name (``LegacySurveyFluxG``) or MMU name (``FLUX_G``)."""
    modality = m.ALL_MODALITIES.get(key) or m.ScalarModalities.get(key)
    if modality is None or not issubclass(modality, m.Scalar):
        scalars = sorted(k for k, v in m.ALL_MODALITIES.items() if issubclass(v, m.Scalar))
        raise ValueError(f"{key!r} is not a scalar modality; scalar codecs exist for {scalars}.")
    return modality


def _reservoir_quantizers(quantizer: torch.nn.Module) -> list[torch.nn.Module]:
    if hasattr(quantizer, "quantizers"):
        return list(quantizer.quantizers)
    return [quantizer] if hasattr(quantizer, "_reservoir") else []


def _fill_short_reservoir(quantizer: torch.nn.Module) -> None:
    """When fewer values than slots were streamed, fills the reservoir with the values' own quantiles.

    Reaches into the reservoir quantizer's state (``_reservoir``, ``_n_total_samples``): the quantizer has no public
    hook for this. Without it, the unfilled slots keep ``reservoir_default`` and distort the CDF.
    """
    seen, size = quantizer._n_total_samples, quantizer._reservoir_size
    if 0 < seen < size:
        values = quantizer._reservoir[:seen].double().cpu().numpy()
        filled = np.quantile(values, np.linspace(0.0, 1.0, size))
        quantizer._reservoir.copy_(torch.from_numpy(filled).to(quantizer._reservoir.dtype))
        quantizer._refresh_codebook()


def _column_of(modality: type[m.Scalar]) -> str:
    from aion_fast.data.mmu import SCALAR_COLUMNS

    for column, (cls, _) in SCALAR_COLUMNS.items():
        if cls is modality:
            return column
    return {m.GaiaXpBp: "coeff[:, :55]", m.GaiaXpRp: "coeff[:, 55:]", m.Ra: "ra/RA", m.Dec: "dec/DEC"}[modality]


def fit_scalar_codecs(
    files: Sequence[str | os.PathLike],
    codecs: dict[str, dict[str, Any] | None],
    defaults: dict[str, Any] | None = None,
    read_rows: int = 65536,
    seed: int = 0,
) -> dict[type[m.Scalar], Codec]:
    """Fits scalar codecs by streaming every finite value of their columns through Algorithm R.

    The codec class of each modality comes from the registry (:func:`aion_fast.codecs.registry.codec_class_for`):
    ``LogScalarCodec`` for fluxes, radii and parallax, ``ScalarCodec`` for shapes, extinction and coordinates,
    ``MultiScalarCodec`` for the Gaia XP coefficients (one reservoir each), ``GridScalarCodec`` for the redshift
    (fixed linear bins: nothing to fit, written as configured).

    Args:
        files: MMU files; each is read in row ranges of ``read_rows`` (rounded up to its HDF5 chunks).
        codecs: modality (class name such as ``LegacySurveyFluxG`` or MMU name such as ``FLUX_G``) -> constructor
            arguments of its codec (``modality`` is filled in).
        defaults: arguments given to every codec whose constructor takes them (e.g. ``codebook_size``,
            ``reservoir_size``).
        read_rows: rows per read.
        seed: seeds Algorithm R's draws.

    Returns:
        modality class -> fitted codec (eval mode).

    Raises:
        ValueError: unknown modality, arguments that do not fit the codec, no files, or a modality with no finite
            value in any file.
    """
    from aion_fast.codecs.registry import codec_class_for
    from aion_fast.data.mmu import MODALITY_GROUPS

    files = [str(f) for f in files]
    if not files:
        raise ValueError("no input files: pass the MMU .hdf5 files to fit the scalar codecs on (--data).")
    if not codecs:
        raise ValueError("no scalar codecs configured: list modalities under codecs: (e.g. LegacySurveyFluxG: {}).")
    if not isinstance(read_rows, int) or read_rows < 1:
        raise ValueError(f"read_rows={read_rows!r} must be an integer >= 1.")
    fitted: dict[type[m.Scalar], Codec] = {}
    for key, arguments in codecs.items():
        modality = _scalar_modality(key)
        codec_class = codec_class_for(modality)
        accepted = inspect.signature(codec_class.__init__).parameters
        kwargs = {k: v for k, v in (defaults or {}).items() if k in accepted}
        kwargs.update(arguments or {})
        kwargs["modality"] = modality.name
        try:
            fitted[modality] = codec_class(**kwargs)
        except TypeError as error:
            raise ValueError(
                f"scalar codec {key}: arguments {kwargs} do not fit {codec_class.__name__}: {error}"
            ) from error
    to_fit = {mod: codec for mod, codec in fitted.items() if _reservoir_quantizers(codec.quantizer)}
    groups = sorted({g for g, members in MODALITY_GROUPS.items() for mod in to_fit if mod in members})
    counts = dict.fromkeys(to_fit, 0)
    generator = torch.Generator().manual_seed(seed)
    for path in files:
        if not Path(path).is_file():
            raise ValueError(f"--data {path}: no such file.")
        with MMUFile(path) as source:
            for start, stop in row_ranges(source.num_rows, read_rows, align=source.chunk_rows()):
                for part in prepare_rows(source, start, stop, groups).parts:
                    codec = to_fit.get(type(part.modality))
                    if codec is not None:
                        codec.quantizer.update(part.modality.value, generator=generator)
                        counts[type(part.modality)] += part.modality.batch_size
    empty = [f"{mod.__name__} (column {_column_of(mod)})" for mod, count in counts.items() if count == 0]
    if empty:
        raise ValueError(
            f"no finite values of {empty} in {files}; remove them from codecs: or pass files that have these columns."
        )
    for codec in to_fit.values():
        for quantizer in _reservoir_quantizers(codec.quantizer):
            _fill_short_reservoir(quantizer)
    for codec in fitted.values():
        codec.eval()
    return fitted


# ------------------------------------------------------------------------------------------------------- output


def save_codecs(output: str | os.PathLike, codecs: Sequence[tuple[Codec, type[m.Modality]]]) -> list[Path]:
    """Writes codecs into ``output/codecs/<modality name>/`` (hub layout), replacing existing ones atomically.

    Every codec is first written to a temporary folder inside ``output``, then each folder is renamed into place, so
    a crash never leaves a half-written codec (an existing one is kept until its replacement is complete).

    Returns:
        The codec folders written.
    """
    import tempfile

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".train-codec-", dir=output))
    written = []
    try:
        for codec, modality in codecs:
            codec.save_pretrained(staging, modality=modality)
        for codec, modality in codecs:
            folder = Codec.folder(modality)
            final = output / folder
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                os.replace(final, staging / f"replaced-{modality.name}")
            os.replace(staging / folder, final)
            written.append(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def load_config(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Reads a codec-training YAML.

    ``image`` / ``spectrum``: ``{"codec": constructor arguments, "training": TrainingConfig}``.
    ``scalar``: ``{"codecs": {modality: arguments}, "defaults": {...}, "read_rows": int, "seed": int}``.

    Raises:
        ValueError: missing file, not a mapping, or unknown sections/settings.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file (see configs/{kind}-codec*.yaml for examples).")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a codec-training config is a mapping of sections, got {type(values).__name__}.")
    sections = {"image": {"codec", "training"}, "spectrum": {"codec", "training"},
                "scalar": {"codecs", "defaults", "read_rows", "seed"}}[kind]  # fmt: skip
    unknown = sorted(set(values) - sections)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown} for {kind} codec training; valid: {sorted(sections)}.")
    if kind == "scalar":
        return {
            "codecs": dict(values.get("codecs") or {}),
            "defaults": dict(values.get("defaults") or {}),
            "read_rows": values.get("read_rows", 65536),
            "seed": values.get("seed", 0),
        }
    if not isinstance(values.get("codec", {}), dict):
        raise ValueError(f"{path}: the codec: section must map constructor arguments to values.")
    return {"codec": dict(values.get("codec") or {}), "training": TrainingConfig.from_dict(values.get("training"))}


# ----------------------------------------------------------------------------------------------------------- demo


def sample_files() -> dict[str, Path]:
    """The bundled MMU sample files by survey (``legacysurvey``, ``desi``, ``gaia``)."""
    root = Path(__file__).resolve().parent.parent / "data" / "sample" / "mmu"
    return {survey: root / survey / "healpix=0" / "001-of-001.hdf5" for survey in ("legacysurvey", "desi", "gaia")}


def demo_codec_configs() -> dict[str, dict[str, Any]]:
    """Configs of the tiny demo codecs: the untrained demo checkpoint's architectures (aion_fast.demo), with a
    mask head on the spectrum decoder (``decoder_dims[-1] = 2``) so the mask BCE is trained too."""
    from aion_fast.demo import DEMO_IMAGE_CODEC, DEMO_SPECTRUM_CODEC

    spectrum = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in DEMO_SPECTRUM_CODEC.items()}
    spectrum["decoder_dims"] = [*spectrum["decoder_dims"][:-1], 2]
    return {"image": dict(DEMO_IMAGE_CODEC), "spectrum": spectrum}


def demo_scalar_specs() -> dict[str, dict[str, Any]]:
    """The scalar codecs of the demo checkpoint (aion_fast.demo), by modality class name."""
    from aion_fast.demo import EXTRA_SCALARS, PHOTOMETRY

    specs: dict[str, dict[str, Any]] = {
        cls.__name__: {"codebook_size": 1024, "reservoir_size": 10_000}
        for cls in [*PHOTOMETRY.values(), *EXTRA_SCALARS.values()]
    }
    for cls in (m.GaiaXpBp, m.GaiaXpRp):
        specs[cls.__name__] = {"compression_fns": ["arcsinh"], "decompression_fns": ["sinh"], "codebook_size": 1024,
                               "reservoir_size": 2_000, "num_quantizers": 55}  # fmt: skip
    specs["Z"] = {"codebook_size": 1024}
    return specs


def train_demo_codecs(
    output: str | os.PathLike,
    image_steps: int = 300,
    spectrum_steps: int = 300,
    seed: int = 0,
    log: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Trains the tiny demo codecs on the bundled MMU sample and writes them to ``output/codecs/`` (hub layout).

    Image codec: 8 synthetic Legacy Survey cut-outs; spectrum codec: 3 real DESI EDR spectra; scalar codecs: the
    sample's Legacy Survey photometry and Gaia fluxes, parallax and XP coefficients (8-16 values each, so the fitted
    CDFs are those few values'), plus the fixed redshift bins. A demo: these codecs are not AION-1 quality.

    Returns:
        A summary: first/last losses, steps and seconds per codec, and the folders written.
    """
    files = sample_files()
    configs = demo_codec_configs()
    summary: dict[str, Any] = {"output": str(output), "seed": seed}
    written: list[tuple[Codec, type[m.Modality]]] = []
    image_config = TrainingConfig(steps=image_steps, batch_size=8, learning_rate=2e-3, warmup_steps=20,
                                  weight_decay=0.0, grad_clip=1.0, seed=seed, log_every=25)  # fmt: skip
    spectrum_config = TrainingConfig(steps=spectrum_steps, batch_size=3, learning_rate=2e-3, warmup_steps=20,
                                     weight_decay=0.1, grad_clip=1.0, seed=seed, log_every=25)  # fmt: skip
    for kind, trainer, config, modality, loss_key in (
        ("image", train_image_codec, image_config, m.LegacySurveyImage, "nll"),
        ("spectrum", train_spectrum_codec, spectrum_config, m.DESISpectrum, "flux_nll"),
    ):
        start = time.perf_counter()
        codec, history = trainer([files["legacysurvey" if kind == "image" else "desi"]], configs[kind], config,
                                 (lambda record, kind=kind: log(kind, record)) if log else None)  # fmt: skip
        summary[kind] = {
            "steps": len(history),
            "wall_s": round(time.perf_counter() - start, 2),
            "first_loss": history[0]["loss"],
            "last_loss": history[-1]["loss"],
            f"first_{loss_key}": history[0][loss_key],
            f"last_{loss_key}": history[-1][loss_key],
        }
        written.append((codec, modality))
    start = time.perf_counter()
    scalars = fit_scalar_codecs([files["legacysurvey"], files["gaia"]], demo_scalar_specs(), seed=seed)
    summary["scalar"] = {"codecs": len(scalars), "wall_s": round(time.perf_counter() - start, 2)}
    written += [(codec, modality) for modality, codec in scalars.items()]
    summary["folders"] = [str(p) for p in save_codecs(output, written)]
    (Path(output) / "DEMO_CODECS.md").write_text(
        "Demo codecs trained by `aion-fast train-codec demo` on the 8 synthetic Legacy Survey images, 3 DESI EDR "
        "spectra and 16 synthetic Gaia sources bundled with aion_fast. They exercise codec training end to end; "
        f"they are NOT AION-1 science quality.\n\n```json\n{json.dumps(summary, indent=2)}\n```\n"
    )
    return summary
