r"""Streaming readers for Multimodal Universe (MMU) HDF5 files, and the one table mapping MMU columns to modalities.

An MMU file holds one survey's objects as parallel datasets of N rows (or, for cross-matched files, the columns of
two surveys, optionally prefixed ``<survey>_``). :class:`MMUFile` reads row ranges ``[start, stop)`` only (h5py
hyperslabs; never the whole file), and :func:`prepare_rows` turns them into modality batches:

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

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aion_fast import modalities as m
from aion_fast.codecs.preprocessing import CROP_SIZE, survey_bands

__all__ = [
    "MODALITY_GROUPS",
    "SCALAR_COLUMNS",
    "SURVEY_PREFIXES",
    "crop_window",
    "numpy_crop",
    "Issue",
    "MMUFile",
    "ObjectBatch",
    "Part",
    "prepare_rows",
    "row_ranges",
]

#: Column-name prefixes of cross-matched files (``legacysurvey_image_array``, ``desi_spectrum_flux``, ...).
SURVEY_PREFIXES = ("legacysurvey_", "hsc_", "desi_", "sdss_", "gaia_")

#: MMU scalar column -> (modality, group). Groups are what ``--modalities`` selects.
SCALAR_COLUMNS: dict[str, tuple[type[m.Scalar], str]] = {
    "FLUX_G": (m.LegacySurveyFluxG, "photometry"),
    "FLUX_R": (m.LegacySurveyFluxR, "photometry"),
    "FLUX_I": (m.LegacySurveyFluxI, "photometry"),
    "FLUX_Z": (m.LegacySurveyFluxZ, "photometry"),
    "FLUX_W1": (m.LegacySurveyFluxW1, "photometry"),
    "FLUX_W2": (m.LegacySurveyFluxW2, "photometry"),
    "FLUX_W3": (m.LegacySurveyFluxW3, "photometry"),
    "FLUX_W4": (m.LegacySurveyFluxW4, "photometry"),
    "SHAPE_R": (m.LegacySurveyShapeR, "photometry"),
    "SHAPE_E1": (m.LegacySurveyShapeE1, "photometry"),
    "SHAPE_E2": (m.LegacySurveyShapeE2, "photometry"),
    "EBV": (m.LegacySurveyEBV, "photometry"),
    "a_g": (m.HSCAG, "photometry"),
    "a_r": (m.HSCAR, "photometry"),
    "a_i": (m.HSCAI, "photometry"),
    "a_z": (m.HSCAZ, "photometry"),
    "a_y": (m.HSCAY, "photometry"),
    "g_cmodel_mag": (m.HSCMagG, "photometry"),
    "r_cmodel_mag": (m.HSCMagR, "photometry"),
    "i_cmodel_mag": (m.HSCMagI, "photometry"),
    "z_cmodel_mag": (m.HSCMagZ, "photometry"),
    "y_cmodel_mag": (m.HSCMagY, "photometry"),
    "i_sdssshape_shape11": (m.HSCShape11, "photometry"),
    "i_sdssshape_shape22": (m.HSCShape22, "photometry"),
    "i_sdssshape_shape12": (m.HSCShape12, "photometry"),
    "phot_g_mean_flux": (m.GaiaFluxG, "gaia"),
    "phot_bp_mean_flux": (m.GaiaFluxBp, "gaia"),
    "phot_rp_mean_flux": (m.GaiaFluxRp, "gaia"),
    "parallax": (m.GaiaParallax, "gaia"),
    "Z": (m.Z, "redshift"),
}

#: Every group ``--modalities`` accepts, with the modalities it may contribute.
MODALITY_GROUPS: dict[str, tuple[type[m.Modality], ...]] = {
    "image": (m.LegacySurveyImage, m.HSCImage),
    "spectrum": (m.DESISpectrum, m.SDSSSpectrum),
    "photometry": tuple(mod for mod, group in SCALAR_COLUMNS.values() if group == "photometry"),
    "gaia": (m.GaiaXpBp, m.GaiaXpRp, *(mod for mod, group in SCALAR_COLUMNS.values() if group == "gaia")),
    "redshift": (m.Z,),
    "position": (m.Ra, m.Dec),
}

_IMAGE_COLUMNS = ("image_array", "image_band")
_SPECTRUM_COLUMNS = ("spectrum_flux", "spectrum_lambda")
#: DESI's joined grid (3600 + 0.8 k Å, 7781 pixels); any other first wavelength or length is read as SDSS.
_DESI_FIRST_LAMBDA, _DESI_PIXELS = 3600.0, 7781


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
    """

    modality: m.Modality
    rows: np.ndarray
    preprocessed: torch.Tensor | None = None
    preprocessed_with: tuple[float, float] | None = None


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


class MMUFile:
    """An MMU HDF5 file opened for row-range reads.

    Args:
        path: the ``.hdf5`` file.

    Attributes:
        columns: canonical column name -> dataset name in the file (survey prefixes of cross-matched files
            stripped; an unprefixed column wins over prefixed ones).
        num_rows: objects in the file.
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = str(path)
        self._h5 = h5py.File(self.path, "r")
        # One h5py Dataset object per member, kept: each `file[name]` lookup costs tens of microseconds.
        self._datasets = {name: obj for name, obj in self._h5.items() if isinstance(obj, h5py.Dataset)}
        self.columns: dict[str, str] = {}
        for name in sorted(self._datasets, key=lambda n: n.startswith(SURVEY_PREFIXES)):
            canonical = name
            for prefix in SURVEY_PREFIXES:
                if name.startswith(prefix):
                    canonical = name[len(prefix) :]
                    break
            self.columns.setdefault(canonical, name)
        shapes = [self._datasets[name].shape for name in self.columns.values()]
        lengths = {shape[0] for shape in shapes if len(shape) > 0}
        if len(lengths) != 1:
            raise ValueError(
                f"{self.path}: columns have different numbers of rows {sorted(lengths)}; an MMU file holds parallel "
                f"datasets of one length N (re-export the file, or cross-match it first)."
            )
        self.num_rows = lengths.pop()

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> MMUFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def has(self, *names: str) -> bool:
        return all(name in self.columns for name in names)

    def dataset(self, name: str) -> Any:
        """The h5py Dataset of a canonical column name (no data read)."""
        return self._datasets[self.columns[name]]

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of one column (a hyperslab read)."""
        return self._datasets[self.columns[name]][start:stop]

    def chunk_rows(self) -> int:
        """Rows per HDF5 chunk of the widest column (1 if unchunked): reads aligned on it touch each chunk once."""
        widest = max(self.columns.values(), key=lambda n: int(np.prod(self._datasets[n].shape[1:], dtype=np.int64)))
        chunks = self._datasets[widest].chunks
        return int(chunks[0]) if chunks else 1

    def available_groups(self) -> list[str]:
        """The ``MODALITY_GROUPS`` this file can contribute to."""
        groups = []
        if self.has(*_IMAGE_COLUMNS):
            groups.append("image")
        if self.has(*_SPECTRUM_COLUMNS):
            groups.append("spectrum")
        scalar_groups = {group for column, (_, group) in SCALAR_COLUMNS.items() if column in self.columns}
        if "coeff" in self.columns:
            scalar_groups.add("gaia")
        if self._position_columns():
            scalar_groups.add("position")
        return groups + [g for g in MODALITY_GROUPS if g in scalar_groups]

    def _position_columns(self) -> tuple[str, str] | None:
        for ra, dec in (("ra", "dec"), ("RA", "DEC")):
            if self.has(ra, dec):
                return ra, dec
        return None

    def object_ids(self, start: int, stop: int) -> list[str]:
        if "object_id" in self.columns:
            return _decode(self.read("object_id", start, stop))
        return [f"{Path(self.path).name}:{row}" for row in range(start, stop)]

    def positions(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        columns = self._position_columns()
        if columns is None:
            return np.full(stop - start, np.nan), np.full(stop - start, np.nan)
        return tuple(np.asarray(self.read(c, start, stop), dtype=np.float64).reshape(-1) for c in columns)


def crop_window(height: int, width: int, what: str = "image_array") -> tuple[int, int]:
    """Top-left corner of the central ``CROP_SIZE`` window the image codec encodes (as ``center_crop`` places it)."""
    top, left = (height - CROP_SIZE) // 2, (width - CROP_SIZE) // 2
    if top < 0 or left < 0:
        raise ValueError(
            f"{what} stamps are {height}x{width} but the image codec needs {CROP_SIZE}x{CROP_SIZE}; cut larger stamps."
        )
    return top, left


def numpy_crop(flux: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central crop of (N, C, H, W) float32 flux and (N, C or 1, H, W) bool good-pixel masks (the default loader)."""
    top, left = crop_window(*flux.shape[2:])
    window = (slice(None), slice(None), slice(top, top + CROP_SIZE), slice(left, left + CROP_SIZE))
    return np.ascontiguousarray(flux[window]), np.ascontiguousarray(good[window])


def _image_parts(
    source: MMUFile, start: int, stop: int, issues: list[Issue], image_pipeline: Callable | None = None
) -> list[Part]:
    """Images of rows [start, stop): central crop, channels in codec order, one part per survey."""
    flux = np.array(source.read("image_array", start, stop), dtype=np.float32)  # our buffer: cleaned in place
    n = stop - start
    if flux.ndim != 4:
        raise ValueError(f"{source.path}: image_array must be (N, C, H, W), got {flux.shape}.")
    top, left = crop_window(*flux.shape[2:], what=f"{source.path}: image_array")
    band_column = source.dataset("image_band")
    bands = np.asarray(band_column[start:stop] if band_column.ndim == 2
                       else np.broadcast_to(band_column[()], (n, flux.shape[1])))  # fmt: skip
    if "image_mask" in source.columns:
        good = np.asarray(source.read("image_mask", start, stop), dtype=bool)
        good = good[:, None] if good.ndim == 3 else good
    else:
        good = np.ones((n, 1, *flux.shape[2:]), dtype=bool)
    window = (slice(None), slice(None), slice(top, top + CROP_SIZE), slice(left, left + CROP_SIZE))
    flux_window, good_window = flux[window], good[window]  # views
    by_survey: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for row in range(n):
        names = [b.upper() for b in _decode(bands[row])]
        survey = names[0].split("-")[0] if names else ""
        expected = survey_bands(survey) if survey in ("DES", "HSC") else None
        if expected is None or sorted(names) != sorted(expected):
            issues.append(Issue(row, "image", f"image_band {names} is not one survey's band set (DES-G/R/I/Z or "
                                              f"HSC-G/R/I/Z/Y, each once)"))  # fmt: skip
            continue
        order = np.array([names.index(b) for b in expected])
        row_good = np.broadcast_to(good_window[row], flux_window.shape[1:])[order]
        if not row_good.any():
            issues.append(Issue(row, "image", "every pixel of the central 96x96 window is masked (image_mask False)"))
            continue
        values = flux_window[row][order]
        finite = np.isfinite(values)
        if not finite[row_good].all():
            issues.append(Issue(row, "image", "NaN/inf flux at pixels image_mask marks good"))
            continue
        if not finite.all():  # only at bad pixels (checked above): 0, in the window of our buffer too
            values[~finite] = 0.0
            flux_window[row][~np.isfinite(flux_window[row])] = 0.0
        by_survey.setdefault(survey, []).append((row, order, values))
    parts = []
    for survey, entries in by_survey.items():
        cls = m.LegacySurveyImage if survey == "DES" else m.HSCImage
        survey_bands_ = survey_bands(survey)
        rows = np.array([row for row, _, _ in entries], dtype=np.int64)
        if image_pipeline is None:
            stack = torch.from_numpy(np.stack([values for _, _, values in entries]))
            parts.append(Part(cls(flux=stack, bands=survey_bands_), rows))
            continue
        stamps = [flux[row] if (order == np.arange(len(order))).all() else np.ascontiguousarray(flux[row][order])
                  for row, order, _ in entries]  # fmt: skip
        cropped, preprocessed = image_pipeline(stamps, survey_bands_)
        parts.append(Part(cls(flux=cropped, bands=survey_bands_), rows, preprocessed, image_pipeline.factors))
    return parts


def _spectrum_parts(source: MMUFile, start: int, stop: int, issues: list[Issue]) -> list[Part]:
    """Spectra of rows [start, stop): padding (lambda <= 0) cut, one part per (survey, length)."""
    flux = np.asarray(source.read("spectrum_flux", start, stop), dtype=np.float32)
    wavelength = np.asarray(source.read("spectrum_lambda", start, stop), dtype=np.float32)
    n = stop - start
    ivar = (np.asarray(source.read("spectrum_ivar", start, stop), dtype=np.float32) if source.has("spectrum_ivar")
            else np.ones_like(flux))  # fmt: skip
    bad = (np.asarray(source.read("spectrum_mask", start, stop), dtype=bool) if source.has("spectrum_mask")
           else np.zeros(flux.shape, dtype=bool))  # fmt: skip
    groups: dict[tuple[type, int], list[int]] = {}
    trimmed: dict[int, slice] = {}
    for row in range(n):
        valid = np.flatnonzero(np.isfinite(wavelength[row]) & (wavelength[row] > 0))
        usable = ~bad[row, valid] & (ivar[row, valid] > 0)
        if valid.size < 2 or not usable.any():
            issues.append(Issue(row, "spectrum", "empty spectrum: fewer than 2 pixels, or none unmasked with ivar > 0"))
            continue
        window = slice(int(valid[0]), int(valid[-1]) + 1)
        if valid.size != window.stop - window.start or not (np.diff(wavelength[row, window]) > 0).all():
            issues.append(Issue(row, "spectrum", "spectrum_lambda is not strictly increasing before its padding"))
            continue
        good = ~bad[row, window]
        if not (np.isfinite(flux[row, window][good]).all() and np.isfinite(ivar[row, window][good]).all()):
            issues.append(Issue(row, "spectrum", "NaN/inf flux or ivar at pixels spectrum_mask marks good"))
            continue
        desi = (
            window.stop - window.start == _DESI_PIXELS and abs(wavelength[row, window.start] - _DESI_FIRST_LAMBDA) < 1
        )
        trimmed[row] = window
        groups.setdefault((m.DESISpectrum if desi else m.SDSSSpectrum, window.stop - window.start), []).append(row)
    parts = []
    for (cls, _), rows in groups.items():

        def stack(values: np.ndarray, rows: list[int] = rows) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack([values[r, trimmed[r]] for r in rows])))

        mask = stack(bad)
        spectrum = cls(flux=torch.nan_to_num(stack(flux)).masked_fill(mask, 0.0),
                       ivar=torch.nan_to_num(stack(ivar)).masked_fill(mask, 0.0), mask=mask,
                       wavelength=stack(wavelength))  # fmt: skip
        parts.append(Part(spectrum, np.asarray(rows, dtype=np.int64)))
    return parts


def _scalar_part(values: np.ndarray, cls: type[m.Scalar], issues: list[Issue]) -> Part | None:
    """Rows with finite values of one scalar (or 55-coefficient) modality; the others become issues."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    for row in np.flatnonzero(~finite).tolist():
        issues.append(Issue(row, cls.__name__, f"{cls.name} is NaN/inf"))
    rows = np.flatnonzero(finite)
    if rows.size == 0:
        return None
    return Part(cls(value=torch.from_numpy(np.ascontiguousarray(values[rows]))), rows.astype(np.int64))


def prepare_rows(
    source: MMUFile, start: int, stop: int, groups: Sequence[str], image_pipeline: Callable | None = None
) -> ObjectBatch:
    """Reads rows ``[start, stop)`` of ``source`` and builds the modality batches of the requested groups.

    Args:
        source: an open MMU file.
        start, stop: row range, ``0 <= start < stop <= source.num_rows``.
        groups: names from :data:`MODALITY_GROUPS`; groups the file lacks are ignored.
        image_pipeline: None (crop in numpy; the codec preprocesses), or a callable
            ``(stamps: list of (C, H, W) float32 in codec band order, bands) -> (cropped (n, C, 96, 96),
            preprocessed (n, 96, 96, 9))`` with a ``factors`` attribute (``(range_compression_factor,
            mult_factor)``), such as :class:`aion_fast.jobs.dali.DaliImagePipeline`.

    Returns:
        An :class:`ObjectBatch`; objects left with no usable modality get an ``Issue(row, "*", ...)``.
    """
    unknown = sorted(set(groups) - set(MODALITY_GROUPS))
    if unknown:
        raise ValueError(f"modalities {unknown} are unknown; choose from {list(MODALITY_GROUPS)} (comma-separated).")
    ra, dec = source.positions(start, stop)
    batch = ObjectBatch(source.path, start, source.object_ids(start, stop), ra, dec)
    wanted = set(groups)
    if "image" in wanted and source.has(*_IMAGE_COLUMNS):
        batch.parts += _image_parts(source, start, stop, batch.issues, image_pipeline)
    if "spectrum" in wanted and source.has(*_SPECTRUM_COLUMNS):
        batch.parts += _spectrum_parts(source, start, stop, batch.issues)
    scalars: list[tuple[np.ndarray, type[m.Scalar]]] = []
    for column, (cls, group) in SCALAR_COLUMNS.items():
        if group in wanted and column in source.columns:
            scalars.append((source.read(column, start, stop), cls))
    if "gaia" in wanted and "coeff" in source.columns:
        coeff = np.asarray(source.read("coeff", start, stop), dtype=np.float32)
        if coeff.ndim != 2 or coeff.shape[1] != 110:
            raise ValueError(f"{source.path}: coeff must be (N, 110) = 55 BP then 55 RP, got {coeff.shape}.")
        scalars += [(coeff[:, :55], m.GaiaXpBp), (coeff[:, 55:], m.GaiaXpRp)]
    if "position" in wanted and source._position_columns():
        scalars += [(ra, m.Ra), (dec, m.Dec)]
    for values, cls in scalars:
        part = _scalar_part(values, cls, batch.issues)
        if part is not None:
            batch.parts.append(part)
    used = batch.used()
    for row in range(batch.size):
        if not used[row]:
            batch.issues.append(Issue(row, "*", f"no usable modality among {sorted(wanted)}; object not encoded"))
    return batch


def row_ranges(num_rows: int, batch_rows: int, align: int = 1) -> Iterable[tuple[int, int]]:
    """Splits ``[0, num_rows)`` into ranges of about ``batch_rows`` rows, rounded up to a multiple of ``align``."""
    step = max(1, -(-max(1, batch_rows) // align) * align)
    return [(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]
