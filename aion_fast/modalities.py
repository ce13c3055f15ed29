"""Modality dataclasses: typed, validated containers for one batch of observations of one kind.

Names, fields, ``token_key``, ``num_tokens`` and ``name`` match the reference package ``aion`` so that code written
against it runs unchanged. Unlike the reference, every instance is validated when it is built: structural problems
(unknown bands, mismatched shapes, integer fluxes, unsorted wavelengths, empty batches) raise a ``ValueError`` that
names the field, the expected shape or range, and the fix. Values are never modified: numpy arrays are wrapped
without copying and tensors are stored as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Modality",
    "Image",
    "Spectrum",
    "Scalar",
    "LegacySurveyImage",
    "HSCImage",
    "DESISpectrum",
    "SDSSSpectrum",
    "LegacySurveyCatalog",
    "LegacySurveySegmentationMap",
    "LegacySurveyFluxG",
    "LegacySurveyFluxR",
    "LegacySurveyFluxI",
    "LegacySurveyFluxZ",
    "LegacySurveyFluxW1",
    "LegacySurveyFluxW2",
    "LegacySurveyFluxW3",
    "LegacySurveyFluxW4",
    "LegacySurveyShapeR",
    "LegacySurveyShapeE1",
    "LegacySurveyShapeE2",
    "LegacySurveyEBV",
    "Z",
    "HSCAG",
    "HSCAR",
    "HSCAI",
    "HSCAZ",
    "HSCAY",
    "HSCMagG",
    "HSCMagR",
    "HSCMagI",
    "HSCMagZ",
    "HSCMagY",
    "HSCShape11",
    "HSCShape22",
    "HSCShape12",
    "GaiaFluxG",
    "GaiaFluxBp",
    "GaiaFluxRp",
    "GaiaParallax",
    "Ra",
    "Dec",
    "GaiaXpBp",
    "GaiaXpRp",
    "ScalarModalities",
    "ALL_MODALITIES",
    "BAND_TO_INDEX",
    "BAND_CLAMP_MAX",
]

#: Position of each band in the 9-channel multi-survey image layout used by the image codec.
BAND_TO_INDEX: dict[str, int] = {
    "HSC-G": 0,
    "HSC-R": 1,
    "HSC-I": 2,
    "HSC-Z": 3,
    "HSC-Y": 4,
    "DES-G": 5,
    "DES-R": 6,
    "DES-I": 7,
    "DES-Z": 8,
}

#: Symmetric clipping bound applied to each band before range compression (in the survey's native flux units).
BAND_CLAMP_MAX: dict[str, float] = {
    "HSC-G": 80.0,
    "HSC-R": 110.0,
    "HSC-I": 200.0,
    "HSC-Z": 330.0,
    "HSC-Y": 500.0,
    "DES-G": 6.0,
    "DES-R": 15.0,
    "DES-I": 20.0,
    "DES-Z": 25.0,
}


def _as_tensor(value: Any, field: str, owner: str) -> Tensor:
    """Returns ``value`` as a tensor without copying; numpy arrays are wrapped, anything else is refused."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ValueError(
        f"{owner}.{field} must be a torch.Tensor (or numpy array), got {type(value).__name__}; "
        f"wrap it with torch.as_tensor(...)."
    )


def _require_float(t: Tensor, field: str, owner: str) -> None:
    if not t.is_floating_point():
        raise ValueError(
            f"{owner}.{field} must have a floating dtype (float32 recommended), got {t.dtype}; "
            f"convert it with .float()."
        )


def _require_nonempty_batch(t: Tensor, field: str, owner: str) -> None:
    if t.ndim == 0 or t.shape[0] == 0:
        raise ValueError(f"{owner}.{field} has an empty batch (shape {tuple(t.shape)}); pass at least one object.")


class Modality:
    """Base class of every modality: one batch of observations of one kind from one survey."""

    token_key: ClassVar[str] = ""
    name: ClassVar[str] = ""
    num_tokens: ClassVar[int] = 0

    @property
    def batch_size(self) -> int:
        """Number of objects in the batch."""
        raise NotImplementedError


@dataclass
class Image(Modality):
    """A batch of multi-band images.

    Attributes:
        flux: (B, C, H, W) floating tensor, one channel per entry of ``bands``.
        bands: C band names from ``BAND_TO_INDEX`` (e.g. ``["DES-G", "DES-R", "DES-I", "DES-Z"]``).
    """

    name: ClassVar[str] = "image"
    survey_prefix: ClassVar[str | None] = None
    flux: Tensor
    bands: list[str]

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self.flux = _as_tensor(self.flux, "flux", owner)
        _require_float(self.flux, "flux", owner)
        if self.flux.ndim != 4:
            raise ValueError(
                f"{owner}.flux must have shape (batch, bands, height, width), got {tuple(self.flux.shape)}; "
                f"add a batch axis with flux[None] for a single image."
            )
        _require_nonempty_batch(self.flux, "flux", owner)
        if isinstance(self.bands, str) or not all(isinstance(b, str) for b in self.bands):
            raise ValueError(f"{owner}.bands must be a list of band names, got {self.bands!r}.")
        self.bands = list(self.bands)
        unknown = [b for b in self.bands if b not in BAND_TO_INDEX]
        if unknown:
            raise ValueError(
                f"{owner}.bands contains unknown band(s) {unknown}; valid bands are {list(BAND_TO_INDEX)} "
                f"(upper case, e.g. 'DES-G', 'HSC-I')."
            )
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"{owner}.bands lists a band twice: {self.bands}; each band may appear once.")
        if len(self.bands) != self.flux.shape[1]:
            raise ValueError(
                f"{owner}.flux has {self.flux.shape[1]} channels but bands lists {len(self.bands)} "
                f"({self.bands}); give one band name per channel."
            )
        if self.survey_prefix is not None:
            foreign = [b for b in self.bands if not b.startswith(self.survey_prefix + "-")]
            if foreign:
                raise ValueError(
                    f"{owner}.bands must all be {self.survey_prefix}-* bands, got {foreign}; "
                    f"use the image class of the survey these bands come from."
                )
        surveys = {b.split("-")[0] for b in self.bands}
        if len(surveys) > 1:
            raise ValueError(f"{owner}.bands mixes surveys {sorted(surveys)}; one image holds the bands of one survey.")

    @property
    def batch_size(self) -> int:
        return int(self.flux.shape[0])

    @property
    def survey(self) -> str:
        """Survey prefix of the bands, ``"DES"`` or ``"HSC"``."""
        return self.bands[0].split("-")[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(flux_shape={list(self.flux.shape)}, bands={self.bands})"


class LegacySurveyImage(Image):
    """Legacy Survey (DES-G/R/I/Z) image cut-outs."""

    token_key: ClassVar[str] = "tok_image"
    num_tokens: ClassVar[int] = 576
    survey_prefix: ClassVar[str | None] = "DES"


class HSCImage(Image):
    """Hyper Suprime-Cam (HSC-G/R/I/Z/Y) image cut-outs."""

    token_key: ClassVar[str] = "tok_image_hsc"
    num_tokens: ClassVar[int] = 576
    survey_prefix: ClassVar[str | None] = "HSC"


@dataclass
class Spectrum(Modality):
    """A batch of 1-D spectra sampled on per-object observed wavelength grids.

    Attributes:
        flux: (B, L) floating tensor.
        ivar: (B, L) floating tensor, inverse variance of ``flux``.
        mask: (B, L) bool tensor, True where a pixel is bad (excluded from the normalisation).
        wavelength: (B, L) floating tensor in Angstrom, strictly increasing along each row.
    """

    name: ClassVar[str] = "spectrum"
    flux: Tensor
    ivar: Tensor
    mask: Tensor
    wavelength: Tensor

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for field in ("flux", "ivar", "mask", "wavelength"):
            setattr(self, field, _as_tensor(getattr(self, field), field, owner))
        for field in ("flux", "ivar", "wavelength"):
            _require_float(getattr(self, field), field, owner)
        if self.mask.dtype != torch.bool:
            raise ValueError(
                f"{owner}.mask must be a bool tensor (True = bad pixel), got {self.mask.dtype}; "
                f"convert with mask.bool()."
            )
        if self.flux.ndim != 2:
            raise ValueError(
                f"{owner}.flux must have shape (batch, pixels), got {tuple(self.flux.shape)}; "
                f"add a batch axis with flux[None] for a single spectrum."
            )
        _require_nonempty_batch(self.flux, "flux", owner)
        if self.flux.shape[1] < 2:
            raise ValueError(f"{owner}.flux needs at least 2 pixels per spectrum, got {self.flux.shape[1]}.")
        for field in ("ivar", "mask", "wavelength"):
            shape = tuple(getattr(self, field).shape)
            if shape != tuple(self.flux.shape):
                raise ValueError(
                    f"{owner}.{field} has shape {shape} but flux has {tuple(self.flux.shape)}; "
                    f"flux, ivar, mask and wavelength must share one (batch, pixels) shape."
                )
        steps = torch.diff(self.wavelength, dim=-1)
        if not bool((steps > 0).all()):
            rows = torch.nonzero(~(steps > 0).all(dim=-1)).flatten().tolist()
            raise ValueError(
                f"{owner}.wavelength must be finite and strictly increasing along each row; rows {rows[:10]} are "
                f"not. Sort the pixels by wavelength and drop padding (e.g. SDSS rows padded with -1)."
            )

    @property
    def batch_size(self) -> int:
        return int(self.flux.shape[0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(flux_shape={list(self.flux.shape)}, "
            f"wavelength_range=[{self.wavelength.min().item():.1f}, {self.wavelength.max().item():.1f}])"
        )


class DESISpectrum(Spectrum):
    """DESI spectra (one 7781-pixel 0.8 A grid per object in the Multimodal Universe files)."""

    token_key: ClassVar[str] = "tok_spectrum_desi"
    num_tokens: ClassVar[int] = 273


class SDSSSpectrum(Spectrum):
    """SDSS/BOSS spectra (log-lambda grids of ~3800-4650 pixels)."""

    token_key: ClassVar[str] = "tok_spectrum_sdss"
    num_tokens: ClassVar[int] = 273


@dataclass
class LegacySurveyCatalog(Modality):
    """A catalog of neighbouring sources around each object (positions in the cut-out and shapes).

    Attributes:
        X: (B, n) integer pixel column of each source; ``mask_value`` (9999) marks an empty slot.
        Y: (B, n) integer pixel row of each source.
        SHAPE_E1: (B, n) floating ellipticity component 1.
        SHAPE_E2: (B, n) floating ellipticity component 2.
        SHAPE_R: (B, n) floating half-light radius.
    """

    name: ClassVar[str] = "catalog"
    token_key: ClassVar[str] = "catalog"
    X: Tensor
    Y: Tensor
    SHAPE_E1: Tensor
    SHAPE_E2: Tensor
    SHAPE_R: Tensor

    def __post_init__(self) -> None:
        owner = type(self).__name__
        fields = ("X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R")
        for field in fields:
            setattr(self, field, _as_tensor(getattr(self, field), field, owner))
        if self.X.ndim != 2:
            raise ValueError(f"{owner}.X must have shape (batch, sources), got {tuple(self.X.shape)}.")
        _require_nonempty_batch(self.X, "X", owner)
        for field in fields[1:]:
            shape = tuple(getattr(self, field).shape)
            if shape != tuple(self.X.shape):
                raise ValueError(
                    f"{owner}.{field} has shape {shape} but X has {tuple(self.X.shape)}; all catalog columns "
                    f"must share one (batch, sources) shape."
                )

    @property
    def batch_size(self) -> int:
        return int(self.X.shape[0])


@dataclass
class LegacySurveySegmentationMap(Modality):
    """Segmentation maps built from Legacy Survey detections.

    Attributes:
        field: (B, H, W) floating tensor with values in [0, 1].
    """

    name: ClassVar[str] = "segmentation_map"
    token_key: ClassVar[str] = "tok_segmap"
    num_tokens: ClassVar[int] = 144
    field: Tensor

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self.field = _as_tensor(self.field, "field", owner)
        _require_float(self.field, "field", owner)
        if self.field.ndim != 3:
            raise ValueError(f"{owner}.field must have shape (batch, height, width), got {tuple(self.field.shape)}.")
        _require_nonempty_batch(self.field, "field", owner)

    @property
    def batch_size(self) -> int:
        return int(self.field.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(field_shape={list(self.field.shape)})"


@dataclass
class Scalar(Modality):
    """A batch of scalar measurements (one value per object, or ``num_tokens`` values for coefficient vectors).

    Attributes:
        value: (B,) floating tensor, or (B, num_tokens) for multi-valued modalities such as Gaia XP coefficients.
            One-value modalities also take what the reference takes: a 0-d tensor (one object), (B, 1) and
            (1, B); their codec returns tokens of the same shape as ``value`` (as the reference's does).
    """

    value: Tensor

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self.value = _as_tensor(self.value, "value", owner)
        _require_float(self.value, "value", owner)
        if self.num_tokens > 1:
            _require_nonempty_batch(self.value, "value", owner)
            if self.value.ndim != 2 or self.value.shape[1] != self.num_tokens:
                raise ValueError(
                    f"{owner}.value must have shape (batch, {self.num_tokens}), got {tuple(self.value.shape)}."
                )
            return
        shape = tuple(self.value.shape)
        if not (len(shape) <= 1 or (len(shape) == 2 and 1 in shape)):
            raise ValueError(
                f"{owner}.value must have shape (batch,) (or (), (batch, 1), (1, batch)), got {shape}; "
                f"one value per object."
            )
        if self.value.numel() == 0:
            raise ValueError(f"{owner}.value has an empty batch (shape {shape}); pass at least one object.")

    @property
    def batch_size(self) -> int:
        """Objects in the batch: ``value.shape[0]``, or the number of values of a one-value modality (so a 0-d
        value is one object and a (1, B) row of values is B objects)."""
        return int(self.value.numel()) if self.num_tokens == 1 else int(self.value.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={list(self.value.shape)})"


def _scalar(class_name: str, name: str, token_key: str, doc: str, num_tokens: int = 1) -> type[Scalar]:
    """Builds one scalar modality class; all scalar modalities differ only in these class attributes."""
    cls = type(
        class_name,
        (Scalar,),
        {
            "__doc__": doc,
            "__module__": __name__,
            "__qualname__": class_name,
            "__annotations__": {"name": "ClassVar[str]", "token_key": "ClassVar[str]", "num_tokens": "ClassVar[int]"},
            "name": name,
            "token_key": token_key,
            "num_tokens": num_tokens,
        },
    )
    return dataclass(cls, repr=False)


LegacySurveyFluxG = _scalar("LegacySurveyFluxG", "FLUX_G", "tok_flux_g", "Legacy Survey g-band flux (nanomaggies).")
LegacySurveyFluxR = _scalar("LegacySurveyFluxR", "FLUX_R", "tok_flux_r", "Legacy Survey r-band flux (nanomaggies).")
LegacySurveyFluxI = _scalar("LegacySurveyFluxI", "FLUX_I", "tok_flux_i", "Legacy Survey i-band flux (nanomaggies).")
LegacySurveyFluxZ = _scalar("LegacySurveyFluxZ", "FLUX_Z", "tok_flux_z", "Legacy Survey z-band flux (nanomaggies).")
LegacySurveyFluxW1 = _scalar("LegacySurveyFluxW1", "FLUX_W1", "tok_flux_w1", "WISE W1 flux (nanomaggies).")
LegacySurveyFluxW2 = _scalar("LegacySurveyFluxW2", "FLUX_W2", "tok_flux_w2", "WISE W2 flux (nanomaggies).")
LegacySurveyFluxW3 = _scalar("LegacySurveyFluxW3", "FLUX_W3", "tok_flux_w3", "WISE W3 flux (nanomaggies).")
LegacySurveyFluxW4 = _scalar("LegacySurveyFluxW4", "FLUX_W4", "tok_flux_w4", "WISE W4 flux (nanomaggies).")
LegacySurveyShapeR = _scalar("LegacySurveyShapeR", "SHAPE_R", "tok_shape_r", "Legacy Survey half-light radius.")
LegacySurveyShapeE1 = _scalar("LegacySurveyShapeE1", "SHAPE_E1", "tok_shape_e1", "Legacy Survey ellipticity e1.")
LegacySurveyShapeE2 = _scalar("LegacySurveyShapeE2", "SHAPE_E2", "tok_shape_e2", "Legacy Survey ellipticity e2.")
LegacySurveyEBV = _scalar("LegacySurveyEBV", "EBV", "tok_ebv", "Galactic E(B-V) reddening.")
Z = _scalar("Z", "Z", "tok_z", "Spectroscopic redshift.")
HSCAG = _scalar("HSCAG", "a_g", "tok_a_g", "HSC g-band extinction.")
HSCAR = _scalar("HSCAR", "a_r", "tok_a_r", "HSC r-band extinction.")
HSCAI = _scalar("HSCAI", "a_i", "tok_a_i", "HSC i-band extinction.")
HSCAZ = _scalar("HSCAZ", "a_z", "tok_a_z", "HSC z-band extinction.")
HSCAY = _scalar("HSCAY", "a_y", "tok_a_y", "HSC y-band extinction.")
HSCMagG = _scalar("HSCMagG", "g_cmodel_mag", "tok_mag_g", "HSC g-band cmodel magnitude.")
HSCMagR = _scalar("HSCMagR", "r_cmodel_mag", "tok_mag_r", "HSC r-band cmodel magnitude.")
HSCMagI = _scalar("HSCMagI", "i_cmodel_mag", "tok_mag_i", "HSC i-band cmodel magnitude.")
HSCMagZ = _scalar("HSCMagZ", "z_cmodel_mag", "tok_mag_z", "HSC z-band cmodel magnitude.")
HSCMagY = _scalar("HSCMagY", "y_cmodel_mag", "tok_mag_y", "HSC y-band cmodel magnitude.")
HSCShape11 = _scalar("HSCShape11", "i_sdssshape_shape11", "tok_shape11", "HSC i-band SDSS shape moment 11.")
HSCShape22 = _scalar("HSCShape22", "i_sdssshape_shape22", "tok_shape22", "HSC i-band SDSS shape moment 22.")
HSCShape12 = _scalar("HSCShape12", "i_sdssshape_shape12", "tok_shape12", "HSC i-band SDSS shape moment 12.")
GaiaFluxG = _scalar("GaiaFluxG", "phot_g_mean_flux", "tok_flux_g_gaia", "Gaia G-band mean flux.")
GaiaFluxBp = _scalar("GaiaFluxBp", "phot_bp_mean_flux", "tok_flux_bp_gaia", "Gaia BP-band mean flux.")
GaiaFluxRp = _scalar("GaiaFluxRp", "phot_rp_mean_flux", "tok_flux_rp_gaia", "Gaia RP-band mean flux.")
GaiaParallax = _scalar("GaiaParallax", "parallax", "tok_parallax", "Gaia parallax (mas).")
Ra = _scalar("Ra", "ra", "tok_ra", "Right ascension (degrees).")
Dec = _scalar("Dec", "dec", "tok_dec", "Declination (degrees).")
GaiaXpBp = _scalar("GaiaXpBp", "bp_coefficients", "tok_xp_bp", "Gaia XP BP spectral coefficients (55).", 55)
GaiaXpRp = _scalar("GaiaXpRp", "rp_coefficients", "tok_xp_rp", "Gaia XP RP spectral coefficients (55).", 55)

#: Scalar modality classes by their ``name`` (the catalog column / codec folder name).
ScalarModalities: dict[str, type[Scalar]] = {
    cls.name: cls
    for cls in (
        LegacySurveyFluxG,
        LegacySurveyFluxR,
        LegacySurveyFluxI,
        LegacySurveyFluxZ,
        LegacySurveyFluxW1,
        LegacySurveyFluxW2,
        LegacySurveyFluxW3,
        LegacySurveyFluxW4,
        LegacySurveyShapeR,
        LegacySurveyShapeE1,
        LegacySurveyShapeE2,
        LegacySurveyEBV,
        Z,
        HSCAG,
        HSCAR,
        HSCAI,
        HSCAZ,
        HSCAY,
        HSCMagG,
        HSCMagR,
        HSCMagI,
        HSCMagZ,
        HSCMagY,
        HSCShape11,
        HSCShape22,
        HSCShape12,
        GaiaFluxG,
        GaiaFluxBp,
        GaiaFluxRp,
        GaiaParallax,
        Ra,
        Dec,
        GaiaXpBp,
        GaiaXpRp,
    )
}

#: Every concrete modality class (the 39 of the reference's public list), by class name.
ALL_MODALITIES: dict[str, type[Modality]] = {
    cls.__name__: cls
    for cls in (
        LegacySurveyImage,
        HSCImage,
        DESISpectrum,
        SDSSSpectrum,
        LegacySurveyCatalog,
        LegacySurveySegmentationMap,
        *ScalarModalities.values(),
    )
}

#: Union of the modality data types, for annotations.
ModalityType = Image | Spectrum | Scalar | LegacySurveyCatalog | LegacySurveySegmentationMap
