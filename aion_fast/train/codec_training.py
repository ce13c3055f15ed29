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
  Algorithm R (:meth:`aion_fast.quantizers.ScalarReservoirQuantizer.fit`, then ``finalize``), reading the files in
  chunk-aligned row ranges. With a reservoir of ``k`` uniform draws, the Dvoretzky-Kiefer-Wolfowitz inequality
  bounds the error of every fitted quantile in probability:
  :math:`P(\sup_x |F_k(x) - F(x)| > \varepsilon) \le 2 e^{-2 k \varepsilon^2}` (:func:`reservoir_quantile_error`).
  When fewer values than ``k`` exist, ``finalize`` fills the reservoir with the values' own quantiles instead of
  keeping its default slots, so the fitted CDF is the data's (the reference leaves the default values in, which piles
  codes on ``reservoir_default``).

Optimisation, checkpoints and metrics are the transformer trainer's (:mod:`aion_fast.train.engine`, settings
:class:`~aion_fast.train.config.CodecTrainConfig`): AdamW without decay on biases and norm weights, linear warm-up
then cosine decay (or a constant rate), clipping, optional bf16 autocast; checkpoints of the codec, optimizer,
schedule and data position (:class:`CodecTrainer`), from which a run resumes with the losses an uninterrupted run
gives (weights initialised after ``torch.manual_seed(seed)``, data order and per-step draws seeded by the seed).
Inputs are read with :func:`aion_fast.data.formats.open_source` and :func:`aion_fast.data.mmu.prepare_rows` (every
format the encoding job reads, one column table).

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

import torch
import torch.nn.functional as F
from torch import Tensor

from aion_fast import modalities as m
from aion_fast.codecs.base import Codec
from aion_fast.codecs.preprocessing import clamp_bounds
from aion_fast.data.columns import MODALITY_GROUPS, SCALAR_COLUMNS, Selection
from aion_fast.data.formats import discover, open_source
from aion_fast.data.mmu import prepare_rows, row_ranges, selection_of
from aion_fast.train.config import CodecTrainConfig, ScalarFitConfig
from aion_fast.train.distributed import latest_checkpoint, load_checkpoint, resolve_device, save_checkpoint
from aion_fast.train.engine import (
    MetricsLog,
    apply_gradients,
    build_optimizer,
    restore_schedule,
    run_steps,
    step_seed,
)

__all__ = [
    "IMAGE_COLUMNS",
    "SPECTRUM_COLUMNS",
    "CodecTrainConfig",
    "CodecTrainer",
    "ImageBatch",
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
    "sample_files",
    "train_demo_codecs",
    "train_image_codec",
    "train_spectrum_codec",
]

#: Columns (by role of :mod:`aion_fast.data.columns`) a codec's loss needs.
_TRAINING_COLUMNS = {
    "image": {"flux": "image_array", "ivar": "image_ivar", "mask": "image_mask"},
    "spectrum": {
        "flux": "spectrum_flux",
        "ivar": "spectrum_ivar",
        "lambda": "spectrum_lambda",
        "mask": "spectrum_mask",
    },
}
#: Columns an MMU file must have to train the image codec (``image_mask``: True = good pixel).
IMAGE_COLUMNS = tuple(_TRAINING_COLUMNS["image"].values())
#: Columns an MMU file must have to train the spectrum codec (``spectrum_mask``: True = bad pixel).
SPECTRUM_COLUMNS = tuple(_TRAINING_COLUMNS["spectrum"].values())

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


def _input_files(files: Sequence[str | os.PathLike], what: str) -> list[str]:
    """``--data`` entries (files, globs, directories) -> the shards they name, in any format of ``data.formats``."""
    files = [str(f) for f in files]
    if not files:
        raise ValueError(f"no input files: pass the MMU files to train the {what} codec on (--data).")
    try:
        return discover(files)
    except FileNotFoundError as error:
        raise ValueError(f"--data {error}") from None


def _check_training_columns(source: Any, selection: Selection, kind: str) -> None:
    """The columns a codec's loss needs are present (images: flux, ivar, mask; spectra: flux, lambda, ivar, mask)."""
    needed = _TRAINING_COLUMNS[kind]
    uses = [use for use in selection.uses if use.kind == kind]
    if uses:
        missing = sorted({column for use in uses for role, column in needed.items() if role not in use.columns})
    else:
        missing = [column for column in needed.values() if not source.keys(column)] or list(needed.values())
    if missing:
        reason = f" ({selection.unusable[kind]})" if kind in selection.unusable else ""
        raise ValueError(
            f"{source.path}: missing column(s) {missing} needed to train the {kind} codec (it needs "
            f"{list(needed.values())}){reason}; pass MMU {kind} files (e.g. legacysurvey/ or hsc/ for images, desi/ "
            f"or sdss/ for spectra)."
        )


def _read_image_records(source: Any, selection: Selection, start: int, stop: int) -> list[tuple]:
    """Rows [start, stop) -> (bands, flux, ivar, good) per usable object, each (C, 96, 96) in codec band order.

    Uses :func:`aion_fast.data.mmu.prepare_rows` (crop, band order, cleaning as for encoding) with the pixel weights;
    a pixel enters the loss where ``image_mask`` is good and ``image_ivar`` is finite and >= 0.
    """
    batch = prepare_rows(source, start, stop, selection, weights=True)
    for issue in batch.issues:
        if issue.modality == "image" and issue.reason.startswith("image_band"):
            raise ValueError(
                f"{source.path} row {start + issue.row}: {issue.reason}; the image codec trains on DES-G/R/I/Z "
                f"(Legacy Survey) or HSC-G/R/I/Z/Y images. Fix the file's image_band column or leave this file out."
            )
    records = []
    for part in batch.parts:
        good = part.good & torch.isfinite(part.ivar) & (part.ivar >= 0)
        ivar = torch.where(good, part.ivar, 0.0)
        bands = tuple(part.modality.bands)
        for i in range(len(part.rows)):
            if bool(good[i].any()):  # else nothing to learn from this object
                records.append((bands, part.modality.flux[i], ivar[i], good[i]))
    return records


def _read_spectrum_records(source: Any, selection: Selection, start: int, stop: int) -> list[tuple]:
    """Rows [start, stop) -> (class, flux, ivar, mask, wavelength) per usable spectrum (padding cut, 1-D tensors).

    Uses :func:`aion_fast.data.mmu.prepare_rows`, so spectra are cleaned exactly as for encoding; rows it refuses
    (every pixel masked, non-increasing wavelengths, NaN at good pixels) are skipped.
    """
    records = []
    for part in prepare_rows(source, start, stop, selection).parts:
        s = part.modality
        for i in range(s.batch_size):
            records.append((type(s), s.flux[i], s.ivar[i], s.mask[i], s.wavelength[i]))
    return records


class _RecordStream:
    """Endless, seeded, shuffled, resumable stream of per-object records of one modality kind.

    Inputs are read through :func:`aion_fast.data.formats.open_source` (every supported format) in chunk-aligned row
    ranges. Epoch ``e`` visits the ranges in the order of a generator seeded by ``(seed, e)``; records are shuffled
    within buffers of about ``shuffle_rows`` objects, buffer ``b`` by a generator seeded by ``(seed, e, b)``. So the
    position ``(epoch, buffer, first range of the buffer, records taken from it)`` is the whole state: resuming
    re-reads one buffer at most.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        kind: str,
        reader: Callable[[Any, Selection, int, int], list[tuple]],
        read_rows: int = 256,
        shuffle_rows: int = 4096,
        seed: int = 0,
    ):
        paths = _input_files(files, kind)
        self.files, self.kind, self.reader = paths, kind, reader
        self.shuffle_rows, self.seed = shuffle_rows, seed
        self.sources: list[Any] = []
        self.selections: list[Selection] = []
        try:
            for path in paths:
                source = open_source(path)
                self.sources.append(source)
                selection = selection_of(source, [kind])
                _check_training_columns(source, selection, kind)
                self.selections.append(selection)
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
            raise ValueError(f"the {kind} files {paths} hold no rows; nothing to train on.")
        self.position = {"epoch": 0, "buffer": 0, "range": 0, "taken": 0}
        self._records: Iterator[tuple] | None = None

    def close(self) -> None:
        for source in self.sources:
            source.close()

    def state_dict(self) -> dict[str, int]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = {key: int(state[key]) for key in ("epoch", "buffer", "range", "taken")}
        self._records = None

    def __iter__(self) -> _RecordStream:
        return self

    def __next__(self) -> tuple:
        if self._records is None:
            self._records = self._generate()
        return next(self._records)

    def _permutation(self, n: int, *key: Any) -> list[int]:
        generator = torch.Generator().manual_seed(step_seed(self.seed, key[0], key[1], "codec-data"))
        return torch.randperm(n, generator=generator).tolist()

    def _generate(self) -> Iterator[tuple]:
        p = self.position
        while True:
            order = self._permutation(len(self.ranges), p["epoch"], -1)
            whole_epoch, produced = p["range"] == 0 and p["taken"] == 0, 0
            while p["range"] < len(order):
                buffer, r = [], p["range"]
                while r < len(order) and len(buffer) < self.shuffle_rows:
                    i, start, stop = self.ranges[order[r]]
                    buffer.extend(self.reader(self.sources[i], self.selections[i], start, stop))
                    r += 1
                for index in self._permutation(len(buffer), p["epoch"], p["buffer"])[p["taken"] :]:
                    p["taken"] += 1
                    produced += 1
                    yield buffer[index]
                p.update(buffer=p["buffer"] + 1, range=r, taken=0)
            if whole_epoch and produced == 0:
                raise ValueError(
                    f"no usable {self.kind} in {self.files}: every object was skipped (all pixels masked, or "
                    f"non-finite values everywhere); check the masks' convention (image_mask True = good, "
                    f"spectrum_mask True = bad)."
                )
            p.update(epoch=p["epoch"] + 1, buffer=0, range=0, taken=0)


def _collate_images(records: Sequence[tuple]) -> list[ImageBatch]:
    """Records -> one :class:`ImageBatch` per band set, in order of first appearance."""
    by_bands: dict[tuple[str, ...], list[tuple]] = {}
    for record in records:
        by_bands.setdefault(record[0], []).append(record)
    return [
        ImageBatch(*(torch.stack([r[k] for r in group]) for k in (1, 2, 3)), bands=list(bands))
        for bands, group in by_bands.items()
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


class CodecTrainer:
    """Trains one codec with the transformer trainer's machinery (:mod:`aion_fast.train.engine`).

    AdamW over :func:`~aion_fast.train.engine.parameter_groups`, warm-up then cosine (or constant) schedule, global
    norm clipping, optional bf16 autocast (``train.precision``), checkpoints of the codec, optimizer, schedule and
    data position through :func:`~aion_fast.train.distributed.save_checkpoint` (atomic; resumed by
    :meth:`resume`), and the metrics log. Each step reseeds torch from ``(seed, step)``, so a resumed run computes
    the uninterrupted run's losses.

    Args:
        codec: the codec (moved to ``train.device`` and trained in place).
        stream: the record stream (:class:`_RecordStream`, or anything with ``__next__`` and ``state_dict`` /
            ``load_state_dict``).
        collate: records -> list of sub-batches. move: ``(sub_batch, device) -> sub_batch``.
        loss_fn: ``(codec, sub_batches) -> dict`` with a differentiable ``loss`` and float diagnostics.
        config: the run's settings.
        checkpoint_dir: where checkpoints go (None: none are written, nothing is resumed).
        metrics_path: the ``.jsonl`` metrics log (None: none). tags: keys added to every metrics line.
        log: also called with each logged record (e.g. to print progress).
    """

    def __init__(
        self,
        codec: Codec,
        stream: Any,
        collate: Callable[[Sequence[tuple]], list],
        move: Callable[[Any, torch.device], Any],
        loss_fn: Callable[[Codec, list], dict[str, Tensor]],
        config: CodecTrainConfig,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        metrics_path: str | os.PathLike | None = None,
        tags: dict[str, Any] | None = None,
        log: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.config = config
        self.device = resolve_device(config.train.device)
        self.codec = codec.to(self.device).train()
        self.stream, self.collate, self.move, self.loss_fn = stream, collate, move, loss_fn
        self.optimizer, self.scheduler, _ = build_optimizer(self.codec, config.optim, config.train.max_steps)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.metrics_log = None if metrics_path is None else MetricsLog(metrics_path, tags=tags)
        self.log = log
        self._start = time.perf_counter()
        if self.checkpoint_dir is not None and config.checkpoint.resume:
            self.resume()

    def train_step(self) -> dict[str, Any]:
        """One optimizer step on the next ``data.batch_size`` records; returns its record."""
        cfg = self.config
        torch.manual_seed(step_seed(cfg.train.seed, self.step, 0, "model"))
        batch = [
            self.move(b, self.device) for b in self.collate([next(self.stream) for _ in range(cfg.data.batch_size)])
        ]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            terms = self.loss_fn(self.codec, batch)
        loss = terms["loss"]
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"codec training step {self.step + 1}: the loss is {float(loss)}; lower optim.lr, set "
                f"optim.grad_clip, or check the inputs' inverse variances."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        applied = apply_gradients(self.codec.parameters(), self.optimizer, self.scheduler, cfg.optim.grad_clip)
        self.step += 1
        record = {"step": self.step, "lr": applied["lr"], "grad_norm": applied["grad_norm"]}
        record.update({name: float(value.detach()) for name, value in terms.items()})
        record["elapsed_s"] = round(time.perf_counter() - self._start, 3)
        self.history.append(record)
        return record

    def _write(self, record: dict[str, Any]) -> None:
        if self.metrics_log is not None:
            self.metrics_log.write(record)
        if self.log is not None:
            self.log(record)

    def train(self) -> list[dict[str, Any]]:
        """Trains to ``train.max_steps`` (or SIGTERM); returns the records of the steps this call ran."""
        cfg = self.config
        save = self.save if self.checkpoint_dir is not None else (lambda: None)
        run, _ = run_steps(self.train_step, lambda: self.step, cfg.train.max_steps, log=self._write,
                           log_every=cfg.train.log_every, save=save, every_steps=cfg.checkpoint.every_steps,
                           device=self.device)  # fmt: skip
        self.codec.eval()
        return run

    def save(self) -> Path:
        """Checkpoints codec, optimizer, schedule, step and data position (atomically, see ``save_checkpoint``)."""
        if self.checkpoint_dir is None:
            raise ValueError("this CodecTrainer has no checkpoint_dir; pass one to save checkpoints.")
        state = {"step": self.step, "scheduler": self.scheduler.state_dict(),
                 "data": json.dumps(self.stream.state_dict()), "world_size": 1}  # fmt: skip
        return save_checkpoint(self.checkpoint_dir, self.step, self.codec, self.optimizer, state,
                               keep_last=self.config.checkpoint.keep_last)  # fmt: skip

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Loads the newest checkpoint of ``checkpoint_dir`` (or ``path``); returns whether one was loaded."""
        path = latest_checkpoint(self.checkpoint_dir) if path is None and self.checkpoint_dir else path
        if path is None:
            return False
        state = load_checkpoint(path, self.codec, self.optimizer)
        self.step = int(state["step"])
        restore_schedule(self.optimizer, self.scheduler, state["scheduler"])
        self.stream.load_state_dict(json.loads(state["data"]))
        return True


def _build_codec(codec_class: type[Codec], codec_config: dict[str, Any], seed: int) -> Codec:
    torch.manual_seed(seed)
    try:
        return codec_class(**dict(codec_config))
    except TypeError as error:
        raise ValueError(f"the codec: section does not fit {codec_class.__name__}: {error}") from error


def _train(
    kind: str,
    codec_class: type[Codec],
    files: Sequence[str | os.PathLike],
    codec_config: dict[str, Any],
    config: CodecTrainConfig,
    **options: Any,
) -> tuple[Codec, list[dict[str, Any]]]:
    reader, collate, move, losses = {
        "image": (_read_image_records, _collate_images, ImageBatch.to, image_codec_losses),
        "spectrum": (_read_spectrum_records, _collate_spectra, _spectrum_to, _spectrum_losses(config)),
    }[kind]
    d = config.data
    stream = _RecordStream(files, kind, reader, d.read_rows, d.shuffle_rows, config.train.seed)
    try:
        codec = _build_codec(codec_class, codec_config, config.train.seed)
        trainer = CodecTrainer(codec, stream, collate, move, losses, config, **options)
        history = trainer.train()
    finally:
        stream.close()
    return codec, history


def _spectrum_losses(config: CodecTrainConfig) -> Callable[[Codec, list], dict[str, Tensor]]:
    def losses(codec: Codec, batch: list) -> dict[str, Tensor]:
        return spectrum_codec_losses(codec, batch, config.loss.mask_weight, config.loss.quantizer_weight)

    return losses


def train_image_codec(
    files: Sequence[str | os.PathLike],
    codec_config: dict[str, Any],
    config: CodecTrainConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    metrics_path: str | os.PathLike | None = None,
) -> tuple[Codec, list[dict[str, Any]]]:
    """Trains an :class:`~aion_fast.codecs.image.ImageCodec` on MMU Legacy Survey/HSC shards (any format).

    Args:
        files: shards, globs or directories with ``image_array``, ``image_ivar`` and ``image_mask`` (True = good)
            and ``image_band`` (or a survey whose bands are known).
        codec_config: ``ImageCodec`` constructor arguments (written to ``codecs/image/config.json``).
        config: optimisation settings (``codec`` is not read here).
        log: progress callback, called with each logged record.
        checkpoint_dir: checkpoints go (and are resumed from) here; None: none.
        metrics_path: the ``.jsonl`` metrics log; None: none.

    Returns:
        (the trained codec in eval mode, the records of the steps run).
    """
    from aion_fast.codecs.image import ImageCodec

    return _train("image", ImageCodec, files, codec_config, config, log=log, checkpoint_dir=checkpoint_dir,
                  metrics_path=metrics_path)  # fmt: skip


def train_spectrum_codec(
    files: Sequence[str | os.PathLike],
    codec_config: dict[str, Any],
    config: CodecTrainConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    metrics_path: str | os.PathLike | None = None,
) -> tuple[Codec, list[dict[str, Any]]]:
    """Trains a :class:`~aion_fast.codecs.spectrum.SpectrumCodec` on MMU DESI/SDSS shards (any format).

    Args:
        files: shards with ``spectrum_flux``, ``spectrum_ivar``, ``spectrum_lambda`` and ``spectrum_mask``
            (True = bad).
        codec_config: ``SpectrumCodec`` constructor arguments; ``decoder_dims[-1] = 2`` adds the mask head that the
            BCE trains (with 1, only flux is reconstructed and the BCE term is 0).
        config, log, checkpoint_dir, metrics_path: as :func:`train_image_codec`.

    Returns:
        (the trained codec in eval mode, the records of the steps run).
    """
    from aion_fast.codecs.spectrum import SpectrumCodec

    return _train("spectrum", SpectrumCodec, files, codec_config, config, log=log, checkpoint_dir=checkpoint_dir,
                  metrics_path=metrics_path)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- scalars


def _scalar_modality(key: str) -> type[m.Scalar]:
    """A scalar modality by class name (``LegacySurveyFluxG``) or MMU name (``FLUX_G``)."""
    modality = m.ALL_MODALITIES.get(key) or m.ScalarModalities.get(key)
    if modality is None or not issubclass(modality, m.Scalar):
        scalars = sorted(k for k, v in m.ALL_MODALITIES.items() if issubclass(v, m.Scalar))
        raise ValueError(f"{key!r} is not a scalar modality; scalar codecs exist for {scalars}.")
    return modality


def _fits(quantizer: torch.nn.Module) -> bool:
    """Whether a quantizer is fitted from data (the reservoir quantizers: ``fit`` then ``finalize``)."""
    return callable(getattr(quantizer, "fit", None)) and callable(getattr(quantizer, "finalize", None))


def _column_of(modality: type[m.Scalar]) -> str:
    """The MMU column of a scalar modality (:data:`~aion_fast.data.columns.SCALAR_COLUMNS`), for messages."""
    return next((column for column, (cls, _) in SCALAR_COLUMNS.items() if cls is modality), modality.name)


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
        files: MMU shards (any format of :mod:`aion_fast.data.formats`), globs or directories; each is read in row
            ranges of ``read_rows`` (rounded up to its chunks).
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

    files = _input_files(files, "scalar")
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
    to_fit = {mod: codec for mod, codec in fitted.items() if _fits(codec.quantizer)}
    groups = sorted({g for g, members in MODALITY_GROUPS.items() for mod in to_fit if mod in members})
    counts = dict.fromkeys(to_fit, 0)
    generator = torch.Generator().manual_seed(seed)
    for path in files:
        with open_source(path) as source:
            for start, stop in row_ranges(source.num_rows, read_rows, align=source.chunk_rows()):
                for part in prepare_rows(source, start, stop, groups).parts:
                    codec = to_fit.get(type(part.modality))
                    if codec is not None:
                        codec.quantizer.fit(part.modality.value, generator=generator)
                        counts[type(part.modality)] += part.modality.batch_size
    empty = [f"{mod.__name__} (column {_column_of(mod)})" for mod, count in counts.items() if count == 0]
    if empty:
        raise ValueError(
            f"no finite values of {empty} in {files}; remove them from codecs: or pass files that have these columns."
        )
    for codec in to_fit.values():
        codec.quantizer.finalize()
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


def load_config(
    path: str | os.PathLike, kind: str, overrides: dict[str, Any] | None = None
) -> CodecTrainConfig | ScalarFitConfig:
    """Reads a codec-training YAML with the shared loader (:func:`aion_fast.train.config.load_config`).

    ``image`` / ``spectrum``: a :class:`~aion_fast.train.config.CodecTrainConfig`; ``scalar``: a
    :class:`~aion_fast.train.config.ScalarFitConfig`. ``overrides``: ``{"section.key": value}``.

    Raises:
        ValueError: missing file, not a mapping, or unknown sections/settings (named).
    """
    from aion_fast.train.config import load_config as load

    if kind not in ("image", "spectrum", "scalar"):
        raise ValueError(f"codec kind {kind!r}: choose 'image', 'spectrum' or 'scalar'.")
    return load(path, overrides, kind=ScalarFitConfig if kind == "scalar" else CodecTrainConfig)


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
    common = {"optim": {"lr": 2e-3, "warmup_steps": 20, "grad_clip": 1.0}, "train": {"seed": seed, "log_every": 25}}
    image_config = CodecTrainConfig.from_dict(common).replace(
        data={"batch_size": 8}, train={"max_steps": image_steps}, optim={"weight_decay": 0.0}
    )
    spectrum_config = CodecTrainConfig.from_dict(common).replace(
        data={"batch_size": 3}, train={"max_steps": spectrum_steps}, optim={"weight_decay": 0.1}
    )
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
