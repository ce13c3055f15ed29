r"""Multimodal Universe (MMU) rows -> modality batches, by the column table of :mod:`aion_fast.data.columns`.

An MMU shard holds one survey's objects as parallel columns of N rows (or, for cross-matched files, the columns of
two surveys, optionally prefixed ``<survey>_``). A source of :mod:`aion_fast.data.formats` (``open_source``: HDF5,
Parquet, Arrow, FITS) reads row ranges ``[start, stop)`` only, and :func:`prepare_rows` turns them into modality
batches:

* **Images** (Legacy Survey ``des-g/r/i/z``, HSC ``hsc-g/r/i/z/y``): ``image_array`` (N, C, H, W) with
  ``image_band`` (N, C) or (C,) lower-case band names and ``image_mask`` (N, H, W) or (N, C, H, W), **True = good
  pixel**. Channels are put in the codec's band order; the central 96x96 window (the one the image codec encodes,
  :func:`~aion_fast.codecs.preprocessing.center_crop`) is cut here so only that moves to the device. Non-finite
  values at bad pixels become 0; finite bad pixels are kept as they are (AION-1 was trained on the arrays as given).
  With an ``image_pipeline`` (the DALI loader, :mod:`aion_fast.jobs.dali`) the crop and the codec's preprocessing
  run there, and the part carries the preprocessed codec input as well.
* **Spectra** (DESI, SDSS): ``spectrum_flux``, ``spectrum_ivar``, ``spectrum_lambda`` (Å), ``spectrum_mask``
  **True = bad pixel**. SDSS rows are padded with ``lambda = -1`` (and ivar 0): padding is cut off before anything
  else, so a padded row tokenizes exactly like the same spectrum unpadded. Rows of equal length share one batch.
* **Scalars**: the columns of :data:`SCALAR_COLUMNS`; Gaia's ``coeff`` (N, 110) is split into the 55 BP and the
  55 RP coefficients.

Per object, a modality that is absent from the file is not used; one that is present but unusable (non-finite
values, every pixel masked, an empty spectrum, a band list that is not one survey's) is skipped for that object and
reported as an :class:`Issue`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aion_fast import modalities as m
from aion_fast.codecs.preprocessing import CROP_SIZE, survey_bands
from aion_fast.data.columns import (
    CATALOG_FIELDS,
    ID_COLUMNS,
    MODALITY_GROUPS,
    SCALAR_COLUMNS,
    SCALAR_SENTINELS,
    SURVEY_IMAGE_BANDS,
    SURVEY_PREFIXES,
    ColumnKey,
    Selection,
    Use,
    select,
)
from aion_fast.data.formats import locate
from aion_fast.ops.image_preprocess import crop_origin

__all__ = [
    "MODALITY_GROUPS",
    "SCALAR_COLUMNS",
    "SURVEY_PREFIXES",
    "crop_window",
    "numpy_crop",
    "Issue",
    "ObjectBatch",
    "Part",
    "check_columns",
    "prepare_rows",
    "row_ranges",
    "selection_of",
]

#: DESI's joined grid (3600 + 0.8 k Å, 7781 pixels); any other first wavelength or length is read as SDSS.
_DESI_FIRST_LAMBDA, _DESI_PIXELS = 3600.0, 7781
_SPECTRUM_OF_SURVEY = {"desi": m.DESISpectrum, "sdss": m.SDSSSpectrum}


@dataclass(frozen=True)
class Issue:
    """A modality of one object that could not be used (``modality`` is ``"*"`` when the whole object failed)."""

    row: int
    modality: str
    reason: str


@dataclass
class Part:
    """One modality batch covering some rows of an :class:`ObjectBatch`.

    Attributes:
        modality: the modality instance, batch size ``len(rows)``.
        rows: (n,) int64 positions of its objects in the :class:`ObjectBatch`.
        preprocessed: images only, from an ``image_pipeline``: (n, 96, 96, 9) float32 image-codec input, equal to
            :func:`aion_fast.ops.image_preprocess` of ``modality.flux``; None otherwise.
        preprocessed_with: the ``(range_compression_factor, mult_factor)`` it was computed with.
        ivar, good: images read with ``weights=True`` only: (n, C, 96, 96) float32 ``image_ivar`` as stored (None
            without that column) and bool ``image_mask`` (True = good), cropped and in the part's band order.
    """

    modality: m.Modality
    rows: np.ndarray
    preprocessed: torch.Tensor | None = None
    preprocessed_with: tuple[float, float] | None = None
    ivar: torch.Tensor | None = None
    good: torch.Tensor | None = None


@dataclass
class ObjectBatch:
    """Rows ``[start, start + size)`` of one MMU file, ready for the codecs.

    Attributes:
        file: the input file.
        start: first file row.
        object_id: (size,) object ids as strings.
        ra, dec: (size,) float64 degrees (NaN where the file has none).
        parts: modality batches; one modality may have several parts (spectra of different lengths).
        issues: unusable modalities per object (``Issue.row`` is a position in this batch).
    """

    file: str
    start: int
    object_id: list[str]
    ra: np.ndarray
    dec: np.ndarray
    parts: list[Part] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.object_id)

    def used(self) -> list[list[str]]:
        """Names of the modality classes used by each object, in part order."""
        used: list[list[str]] = [[] for _ in range(self.size)]
        for part in self.parts:
            for row in part.rows.tolist():
                used[row].append(type(part.modality).__name__)
        return used

    def pin_memory(self) -> ObjectBatch:
        """Pins every tensor of every part (called by ``DataLoader(pin_memory=True)``)."""
        for part in self.parts:
            modality = part.modality
            for name, value in vars(modality).items():
                if isinstance(value, torch.Tensor):
                    setattr(modality, name, value.pin_memory())
        return self


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1).tolist()]


def crop_window(height: int, width: int, what: str = "image_array") -> tuple[int, int]:
    """Top-left corner of the central ``CROP_SIZE`` window the image codec encodes (``ops``' ``crop_origin``)."""
    return crop_origin(height, width, CROP_SIZE, what)


def numpy_crop(flux: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central crop of (N, C, H, W) float32 flux and (N, C or 1, H, W) bool good-pixel masks (the default loader)."""
    top, left = crop_window(*flux.shape[2:])
    window = (slice(None), slice(None), slice(top, top + CROP_SIZE), slice(left, left + CROP_SIZE))
    return np.ascontiguousarray(flux[window]), np.ascontiguousarray(good[window])


class _Columns:
    """Reads ``(survey, name)`` column keys from a :mod:`aion_fast.data.formats` source."""

    def __init__(self, source: Any):
        self.source = source
        self.keys = {key: key for key in source.columns}
        located = locate(source.path)
        self.survey = getattr(source, "survey", None) or located[0]
        self.relative_name = getattr(source, "relative_name", None) or located[1]
        self.shared = dict(getattr(source, "shared", {}))

    def read(self, key: ColumnKey, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.source.read(self.keys[key], start, stop))

    def row_shape(self, key: ColumnKey) -> tuple[int, ...]:
        return tuple(self.source.row_shape(key))


def _image_parts(
    source: _Columns,
    use: Use,
    start: int,
    stop: int,
    issues: list[Issue],
    image_pipeline: Callable | None = None,
    weights: bool = False,
) -> list[Part]:
    """Images of rows [start, stop): central crop, channels in codec order, one part per survey."""
    flux = np.array(source.read(use.columns["flux"], start, stop), dtype=np.float32)  # our buffer: cleaned in place
    n = stop - start
    if flux.ndim != 4:
        raise ValueError(f"{source.source.path}: image_array must be (N, C, H, W), got {flux.shape}.")
    top, left = crop_window(*flux.shape[2:], what=f"{source.source.path}: image_array")
    if "band" in use.columns:
        band_column = source.read(use.columns["band"], start, stop)
    else:  # no image_band column: the survey's bands in order (SURVEY_IMAGE_BANDS)
        survey = use.survey or source.survey
        band_column = np.array([b.lower() for b in SURVEY_IMAGE_BANDS.get(survey, ())])
        if len(band_column) != flux.shape[1]:
            raise ValueError(
                f"{source.source.path}: image_array has {flux.shape[1]} channels and no image_band column; without "
                f"one a {survey} image must have the bands {list(SURVEY_IMAGE_BANDS.get(survey, ()))}. Add an "
                f"image_band column (N, C) of band names such as b'des-g'."
            )
    bands = band_column if band_column.ndim == 2 else np.broadcast_to(band_column, (n, flux.shape[1]))
    if "mask" in use.columns:
        good = np.asarray(source.read(use.columns["mask"], start, stop), dtype=bool)
        good = good[:, None] if good.ndim == 3 else good
    else:
        good = np.ones((n, 1, *flux.shape[2:]), dtype=bool)
    window = (slice(None), slice(None), slice(top, top + CROP_SIZE), slice(left, left + CROP_SIZE))
    ivar = source.read(use.columns["ivar"], start, stop)[window] if "ivar" in use.columns else None
    flux_window, good_window = flux[window], good[window]  # views
    allowed = {cls.__name__ for cls in use.modalities}
    by_bands: dict[tuple[str, ...], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for row in range(n):
        names = [b.upper() for b in _decode(bands[row])]
        survey = names[0].split("-")[0] if names else ""
        known = survey_bands(survey) if survey in ("DES", "HSC") else None
        if known is None or not set(names) <= set(known) or len(set(names)) != len(names):
            issues.append(Issue(row, "image", f"image_band {names} is not one survey's band set (a subset of "
                                              f"DES-G/R/I/Z or HSC-G/R/I/Z/Y, each once)"))  # fmt: skip
            continue
        cls_name = "LegacySurveyImage" if survey == "DES" else "HSCImage"
        if cls_name not in allowed:  # a file of both surveys' stamps and a model that takes one of them
            issues.append(Issue(row, "image", f"image_band {names} makes it a {cls_name}, which the model does not "
                                              f"take (it takes {sorted(allowed)})"))  # fmt: skip
            continue
        expected = [b for b in known if b in names]
        order = np.array([names.index(b) for b in expected])
        row_good = np.broadcast_to(good_window[row], flux_window.shape[1:])[order]
        if not row_good.any():
            issues.append(Issue(row, "image", "every pixel of the central 96x96 window is masked (image_mask False)"))
            continue
        if ivar is not None and not np.any(ivar[row] > 0):
            issues.append(Issue(row, "image", "image_ivar is 0 at every pixel of the central 96x96 window (no data)"))
            continue
        values = flux_window[row][order]
        finite = np.isfinite(values)
        if not finite[row_good].all():
            issues.append(Issue(row, "image", "NaN/inf flux at pixels image_mask marks good"))
            continue
        if not finite.all():  # only at bad pixels (checked above): 0, in the window of our buffer too
            values[~finite] = 0.0
            flux_window[row][~np.isfinite(flux_window[row])] = 0.0
        by_bands.setdefault(tuple(expected), []).append((row, order, values))  # 3-band files: own part
    parts = []
    for part_bands, entries in by_bands.items():
        cls = m.LegacySurveyImage if part_bands[0].startswith("DES") else m.HSCImage
        rows = np.array([row for row, _, _ in entries], dtype=np.int64)
        if image_pipeline is None:
            stack = torch.from_numpy(np.stack([values for _, _, values in entries]))
            part = Part(cls(flux=stack, bands=list(part_bands)), rows)
            if weights:
                shape = flux_window.shape[1:]
                good_rows = [np.broadcast_to(good_window[r], shape)[o] for r, o, _ in entries]
                part.good = torch.from_numpy(np.stack(good_rows))
                if ivar is not None:
                    part.ivar = torch.from_numpy(np.stack([ivar[r][o] for r, o, _ in entries]).astype(np.float32))
            parts.append(part)
            continue
        stamps = [flux[row] if (order == np.arange(len(order))).all() else np.ascontiguousarray(flux[row][order])
                  for row, order, _ in entries]  # fmt: skip
        cropped, preprocessed = image_pipeline(stamps, list(part_bands))
        parts.append(Part(cls(flux=cropped, bands=list(part_bands)), rows, preprocessed, image_pipeline.factors))
    return parts


def _overlaps(first: float, last: float, grid: tuple[float, float, int]) -> bool:
    """Whether ``[first, last]`` holds a point ``lambda_min + k * resolution``, ``0 <= k < num_pixels``."""
    lambda_min, resolution, num_pixels = grid
    low = max(0, math.ceil((first - lambda_min) / resolution - 1e-9))
    high = min(num_pixels - 1, math.floor((last - lambda_min) / resolution + 1e-9))
    return low <= high


def _spectrum_parts(
    source: _Columns, use: Use, start: int, stop: int, issues: list[Issue], grid: tuple[float, float, int] | None
) -> list[Part]:
    """Spectra of rows [start, stop): padding (lambda <= 0) cut, one part per (survey, length).

    A row whose wavelengths miss the codec's latent ``grid`` (``(lambda_min, resolution, num_pixels)``; None = not
    checked) or that is another survey's than the model takes is an :class:`Issue`, not an error of the batch.

    Flux, ivar and mask go to the codec as the file holds them (the codec ignores flagged pixels, NaN included), so
    the job's tokens equal ``CodecManager.encode`` on the file's arrays with the padding removed.
    """
    flux = source.read(use.columns["flux"], start, stop)
    wavelength = source.read(use.columns["lambda"], start, stop)
    n = stop - start
    ivar = source.read(use.columns["ivar"], start, stop) if "ivar" in use.columns else np.ones(flux.shape, np.float32)
    bad = (np.asarray(source.read(use.columns["mask"], start, stop), dtype=bool) if "mask" in use.columns
           else np.zeros(flux.shape, dtype=bool))  # fmt: skip
    if not (flux.shape == wavelength.shape == ivar.shape == bad.shape) or flux.ndim != 2:
        raise ValueError(
            f"{source.source.path}: spectrum columns must share one (N, L) shape; got flux {flux.shape}, lambda "
            f"{wavelength.shape}, ivar {ivar.shape}, mask {bad.shape}."
        )
    allowed = {cls.__name__ for cls in use.modalities}
    fixed = _SPECTRUM_OF_SURVEY.get(use.survey or source.survey)  # a DESI or SDSS file: its rows are that survey's
    groups: dict[tuple[type, int], list[int]] = {}
    trimmed: dict[int, slice] = {}
    for row in range(n):
        valid = np.flatnonzero(np.isfinite(wavelength[row]) & (wavelength[row] > 0))
        usable = ~bad[row, valid] & (ivar[row, valid] > 0)
        if valid.size < 2 or not usable.any():
            issues.append(Issue(row, "spectrum", "empty spectrum: fewer than 2 pixels, or none unmasked with ivar > 0 "
                                                 "(all-zero ivar)"))  # fmt: skip
            continue
        window = slice(int(valid[0]), int(valid[-1]) + 1)
        if valid.size != window.stop - window.start or not (np.diff(wavelength[row, window]) > 0).all():
            issues.append(Issue(row, "spectrum", "spectrum_lambda is not strictly increasing before its padding"))
            continue
        good = ~bad[row, window]
        if not (np.isfinite(flux[row, window][good]).all() and np.isfinite(ivar[row, window][good]).all()):
            issues.append(Issue(row, "spectrum", "NaN/inf flux or ivar at pixels spectrum_mask marks good"))
            continue
        first, last = float(wavelength[row, window.start]), float(wavelength[row, window.stop - 1])
        if grid is not None and not _overlaps(first, last, grid):
            top = grid[0] + grid[1] * (grid[2] - 1)
            reason = (f"spectrum_lambda [{first:.1f}, {last:.1f}] does not overlap the codec's wavelength grid "
                      f"[{grid[0]:.1f}, {top:.1f}] Angstrom (observed-frame Angstrom expected)")  # fmt: skip
            issues.append(Issue(row, "spectrum", reason))
            continue
        if fixed is not None:
            cls = fixed
        else:
            desi = window.stop - window.start == _DESI_PIXELS and abs(first - _DESI_FIRST_LAMBDA) < 1
            cls = m.DESISpectrum if desi else m.SDSSSpectrum
        if cls.__name__ not in allowed:
            reason = (f"a {window.stop - window.start}-pixel spectrum from {first:.0f} Angstrom is read as "
                      f"{cls.__name__}, which the model does not take")  # fmt: skip
            issues.append(Issue(row, "spectrum", reason))
            continue
        trimmed[row] = window
        groups.setdefault((cls, window.stop - window.start), []).append(row)
    parts = []
    for (cls, _), rows in groups.items():

        def stack(values: np.ndarray, dtype: Any, rows: list[int] = rows) -> torch.Tensor:
            return torch.from_numpy(np.stack([values[r, trimmed[r]] for r in rows]).astype(dtype, copy=False))

        spectrum = cls(flux=stack(flux, np.float32), ivar=stack(ivar, np.float32), mask=stack(bad, bool),
                       wavelength=stack(wavelength, np.float32))  # fmt: skip
        parts.append(Part(spectrum, np.asarray(rows, dtype=np.int64)))
    return parts


def _scalar_part(values: np.ndarray, cls: type[m.Scalar], issues: list[Issue], column: str = "") -> Part | None:
    """Rows with finite values of one scalar (or 55-coefficient) modality; the others become issues.

    Single values equal to a catalogue placeholder (:data:`~aion_fast.data.columns.SCALAR_SENTINELS`, e.g. DESI's
    -99) are absent too; coefficient vectors have no placeholder.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim > 2 or (cls.num_tokens == 1 and values.ndim != 1):
        raise ValueError(f"{column or cls.name} must hold one value per row (shape (N,)), got {values.shape[1:]} "
                         f"per row.")  # fmt: skip
    flat = values.reshape(values.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    placeholder = np.isin(flat, SCALAR_SENTINELS).any(axis=1) if cls.num_tokens == 1 else np.zeros_like(finite)
    for row in np.flatnonzero(~finite).tolist():
        issues.append(Issue(row, cls.__name__, f"{column or cls.name} is NaN/inf"))
    for row in np.flatnonzero(finite & placeholder).tolist():
        issues.append(Issue(row, cls.__name__, f"{column or cls.name} = {flat[row, 0]:g}, the catalogue's 'not "
                                               f"measured' placeholder"))  # fmt: skip
    rows = np.flatnonzero(finite & ~placeholder)
    if rows.size == 0:
        return None
    return Part(cls(value=torch.from_numpy(np.ascontiguousarray(values[rows]))), rows.astype(np.int64))


def _xp_parts(source: _Columns, use: Use, start: int, stop: int, issues: list[Issue]) -> list[Part]:
    """Gaia XP coefficients: ``coeff`` (N, 110) = 55 BP then 55 RP, or ``bp_coefficients`` / ``rp_coefficients``."""
    allowed = {cls.__name__ for cls in use.modalities}
    if "coeff" in use.columns:
        coeff = np.asarray(source.read(use.columns["coeff"], start, stop), dtype=np.float32)
        if coeff.ndim != 2 or coeff.shape[1] != 110:
            raise ValueError(f"{source.source.path}: coeff must be (N, 110) = 55 BP then 55 RP, got {coeff.shape}.")
        pieces = [(coeff[:, :55], m.GaiaXpBp, "coeff[:55]"), (coeff[:, 55:], m.GaiaXpRp, "coeff[55:]")]
    else:
        ((role, key),) = use.columns.items()
        values = np.asarray(source.read(key, start, stop), dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != 55:
            raise ValueError(f"{source.source.path}: {key[1]} must be (N, 55), got {values.shape}.")
        pieces = [(values, use.modalities[0], key[1])]
    parts = [_scalar_part(v, cls, issues, name) for v, cls, name in pieces if cls.__name__ in allowed]
    return [p for p in parts if p is not None]


def _catalog_part(source: _Columns, use: Use, start: int, stop: int, issues: list[Issue]) -> Part | None:
    """The neighbouring-source catalogue as :class:`~aion_fast.modalities.LegacySurveyCatalog`.

    MMU writes the 20 brightest sources of the stamp, zero-padded, with pixel positions in the stamp; the catalog
    codec takes positions in the central 96x96 window (``X - left``, ``Y - top``). A slot is empty (``9999``, the
    codec's mask value) when it is padding (every field 0) or its source lies outside that window.
    """
    fields = {f: np.asarray(source.read(use.columns[f], start, stop)) for f in CATALOG_FIELDS}
    shape = fields["X"].shape
    if len(shape) != 2 or any(v.shape != shape for v in fields.values()):
        raise ValueError(f"{source.source.path}: catalog_X/Y/SHAPE_E1/SHAPE_E2/SHAPE_R must share one (N, sources) "
                         f"shape, got {[v.shape for v in fields.values()]}.")  # fmt: skip
    height, width = source.row_shape(use.columns["image"])[-2:] if "image" in use.columns else (CROP_SIZE, CROP_SIZE)
    top, left = crop_window(height, width, what=f"{source.source.path}: image_array")
    x = np.round(fields["X"].astype(np.float64)) - left
    y = np.round(fields["Y"].astype(np.float64)) - top
    padding = np.all([fields[f] == 0 for f in CATALOG_FIELDS], axis=0)
    finite = np.all([np.isfinite(fields[f].astype(np.float64)) for f in CATALOG_FIELDS], axis=0)
    occupied = ~padding & finite & (x >= 0) & (x < CROP_SIZE) & (y >= 0) & (y < CROP_SIZE)
    rows = np.flatnonzero(occupied.any(axis=1))
    for row in np.flatnonzero(~occupied.any(axis=1)).tolist():
        issues.append(Issue(row, "LegacySurveyCatalog", "no catalogue source inside the central 96x96 window"))
    if rows.size == 0:
        return None
    empty = 9999.0
    values = {
        "X": np.where(occupied, x, empty), "Y": np.where(occupied, y, empty),
        **{f: np.where(occupied, fields[f].astype(np.float64), empty) for f in ("SHAPE_E1", "SHAPE_E2", "SHAPE_R")},
    }  # fmt: skip
    tensors = {f: torch.from_numpy(np.ascontiguousarray(v[rows])) for f, v in values.items()}
    tensors["X"], tensors["Y"] = tensors["X"].long(), tensors["Y"].long()
    tensors.update({f: tensors[f].float() for f in ("SHAPE_E1", "SHAPE_E2", "SHAPE_R")})
    return Part(m.LegacySurveyCatalog(**tensors), rows.astype(np.int64))


def _segmentation_part(source: _Columns, use: Use, start: int, stop: int, issues: list[Issue]) -> Part | None:
    """``object_mask`` (N, H, W) as a segmentation map in [0, 1]: 1 where a catalogue object covers the pixel.

    MMU's mask codes the model type of the object at each pixel (0 background, 1-6 PSF ... DUP); AION's
    segmentation tokenizer takes maps in [0, 1] (paper section 4.5), so any object is 1.
    """
    mask = np.asarray(source.read(use.columns["mask"], start, stop))
    if mask.ndim != 3:
        raise ValueError(f"{source.source.path}: object_mask must be (N, H, W), got {mask.shape}.")
    field = (mask > 0).astype(np.float32)
    return Part(m.LegacySurveySegmentationMap(field=torch.from_numpy(field)), np.arange(len(field), dtype=np.int64))


def _object_ids(source: _Columns, selection: Selection, start: int, stop: int, issues: list[Issue]) -> list[str]:
    """Ids as text; an id that is not UTF-8 keeps its bytes as ``\\x`` escapes and gets a ledger row."""
    if selection.id_column is None:
        return [f"{source.relative_name}:{row}" for row in range(start, stop)]
    values = source.read(selection.id_column, start, stop)
    if values.ndim != 1:
        raise ValueError(
            f"{source.source.path}: id column {selection.id_column[1]!r} must hold one id per row (shape (N,)), got "
            f"{values.shape[1:]} per row; fix the file or rename that column."
        )
    ids = []
    for row, value in enumerate(values.tolist()):
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                issues.append(Issue(row, "object_id", f"id column {selection.id_column[1]!r} holds bytes that are not "
                                                      f"UTF-8 ({value[:40]!r}); written with \\x escapes"))  # fmt: skip
                value = value.decode("utf-8", "backslashreplace")
        ids.append(str(value))
    return ids


def _expect(source: _Columns, key: ColumnKey, shapes: Sequence[tuple[int, ...]], meaning: str) -> tuple[int, ...]:
    """The per-row shape of a column if it is one of ``shapes`` (-1 = any length), else a ValueError naming it."""
    shape = source.row_shape(key)
    for expected in shapes:
        if len(shape) == len(expected) and all(e in (-1, s) for e, s in zip(expected, shape)):
            return shape
    column = "/".join(filter(None, key))
    raise ValueError(
        f"{source.source.path}: column {column} holds {shape or 'a single value'} per row, but it must be {meaning}; "
        f"fix or re-export the file (or leave that modality out with --modalities)."
    )


def check_columns(source: Any, selection: Selection) -> None:
    """Checks, before any row is read, that every column ``selection`` uses has the per-row shape its modality needs.

    A wrong shape is a problem of the whole file (not of one object), so it stops the job with one line naming the
    file, the column and the shape expected.

    Raises:
        ValueError: the first column of a wrong shape.
    """
    columns = _Columns(source)
    per_row = {*ID_COLUMNS, "ra", "dec", "RA", "DEC", *SCALAR_COLUMNS, "image_array", "spectrum_flux", "coeff"}
    for name in getattr(source, "single_values", ()):
        if name in per_row or any(name == f"{p}{c}" for p in SURVEY_PREFIXES for c in per_row):
            raise ValueError(f"{source.path}: {name} is a single value (a 0-d dataset), not one value per row; "
                             f"write it as an (N,) column (or rename it if it is file metadata).")  # fmt: skip
    if selection.id_column is not None:
        _expect(columns, selection.id_column, [()], "one id per row (an (N,) column)")
    for key in selection.position_columns or ():
        _expect(columns, key, [()], "one value per row (an (N,) column of degrees)")
    for use in selection.uses:
        roles = use.columns
        if use.kind == "image":
            c, h, w = _expect(columns, roles["flux"], [(-1, -1, -1)], "a (C, H, W) image stamp")
            if h > 0 and w > 0:  # -1: sizes vary between rows (checked per batch)
                crop_window(h, w, what=f"{source.path}: {'/'.join(filter(None, roles['flux']))}")
            if "band" in roles:  # else the survey's bands (tutorial files), checked against C per batch
                _expect(columns, roles["band"], [(c,), ()], f"the band names of the {c} channels ((N, {c}) or ({c},))")
            if "mask" in roles:
                _expect(columns, roles["mask"], [(h, w), (c, h, w)], f"a ({h}, {w}) or ({c}, {h}, {w}) pixel mask")
            if "ivar" in roles:
                _expect(columns, roles["ivar"], [(c, h, w)], f"a ({c}, {h}, {w}) inverse variance like image_array")
        elif use.kind == "spectrum":
            (length,) = _expect(columns, roles["flux"], [(-1,)], "a (L,) spectrum")
            for role in ("lambda", "ivar", "mask"):
                if role in roles:
                    _expect(columns, roles[role], [(length,)], f"({length},) like spectrum_flux (one value per pixel)")
        elif use.kind == "scalar":
            _expect(columns, roles["value"], [()], "one value per row (an (N,) column)")
        elif use.kind == "xp":
            for role, key in roles.items():
                _expect(columns, key, [(110,)] if role == "coeff" else [(55,)], "Gaia XP coefficients "
                        + ("(110,) = 55 BP then 55 RP" if role == "coeff" else "(55,)"))  # fmt: skip


def _positions(source: _Columns, selection: Selection, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    if selection.position_columns is None:
        return np.full(stop - start, np.nan), np.full(stop - start, np.nan)
    ra, dec = (source.read(key, start, stop) for key in selection.position_columns)
    if ra.ndim != 1 or dec.ndim != 1:
        raise ValueError(f"{source.source.path}: ra/dec must hold one value per row, got shapes {ra.shape}, "
                         f"{dec.shape}.")  # fmt: skip
    return ra.astype(np.float64), dec.astype(np.float64)


def selection_of(source: Any, groups: Sequence[str] | None = None, **options: Any) -> Selection:
    """:func:`~aion_fast.data.columns.select` for an open source of :mod:`aion_fast.data.formats`."""
    columns = _Columns(source)
    return select(columns.keys, file_survey=columns.survey, groups=groups, shared=columns.shared, what=source.path,
                  **options)  # fmt: skip


def prepare_rows(
    source: Any,
    start: int,
    stop: int,
    groups: Sequence[str] | Selection | None = None,
    image_pipeline: Callable | None = None,
    weights: bool = False,
) -> ObjectBatch:
    """Reads rows ``[start, stop)`` of ``source`` and builds the modality batches it contributes.

    Args:
        source: a source of :mod:`aion_fast.data.formats` (:func:`~aion_fast.data.formats.open_source`).
        start, stop: row range, ``0 <= start < stop <= source.num_rows``.
        groups: a :class:`~aion_fast.data.columns.Selection` (the job computes one per file), names from
            :data:`MODALITY_GROUPS` (exactly those groups; groups the file lacks are ignored), or None (each
            survey's defaults).
        image_pipeline: None (crop in numpy; the codec preprocesses), or a callable
            ``(stamps: list of (C, H, W) float32 in codec band order, bands) -> (cropped (n, C, 96, 96),
            preprocessed (n, 96, 96, 9))`` with a ``factors`` attribute (``(range_compression_factor,
            mult_factor)``), such as :class:`aion_fast.jobs.dali.DaliImagePipeline`.
        weights: images also carry their ``image_ivar`` and ``image_mask`` (:attr:`Part.ivar`, :attr:`Part.good`),
            as codec training scores pixels with them (not with ``image_pipeline``).

    Returns:
        An :class:`ObjectBatch`; objects left with no usable modality get an ``Issue(row, "*", ...)``.
    """
    if groups is not None and not isinstance(groups, Selection):
        unknown = sorted(set(groups) - set(MODALITY_GROUPS))
        if unknown:
            raise ValueError(f"modalities {unknown} are unknown; choose from {list(MODALITY_GROUPS)}.")
    columns = _Columns(source)
    selection = groups if isinstance(groups, Selection) else selection_of(source, groups)
    ra, dec = _positions(columns, selection, start, stop)
    issues: list[Issue] = []
    batch = ObjectBatch(source.path, start, _object_ids(columns, selection, start, stop, issues), ra, dec, [], issues)
    for use in selection.uses:
        if use.kind == "image":
            batch.parts += _image_parts(columns, use, start, stop, batch.issues, image_pipeline, weights)
        elif use.kind == "spectrum":
            batch.parts += _spectrum_parts(columns, use, start, stop, batch.issues, selection.spectrum_grid)
        elif use.kind == "xp":
            batch.parts += _xp_parts(columns, use, start, stop, batch.issues)
        else:
            build = {"catalog": _catalog_part, "segmentation": _segmentation_part}.get(use.kind)
            if build is not None:
                part = build(columns, use, start, stop, batch.issues)
            else:
                key = use.columns["value"]
                part = _scalar_part(columns.read(key, start, stop), use.modalities[0], batch.issues, key[1])
            if part is not None:
                batch.parts.append(part)
    for group, reason in selection.unusable.items():
        batch.issues += [Issue(row, group, reason) for row in range(batch.size)]
    used = batch.used()
    for row in range(batch.size):
        if not used[row]:
            batch.issues.append(Issue(row, "*", f"no usable modality among {selection.modality_names()}; "
                                                f"object not encoded"))  # fmt: skip
    return batch


def row_ranges(num_rows: int, batch_rows: int, align: int = 1) -> Iterable[tuple[int, int]]:
    """Splits ``[0, num_rows)`` into ranges of about ``batch_rows`` rows, rounded up to a multiple of ``align``."""
    step = max(1, -(-max(1, batch_rows) // align) * align)
    return [(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]
