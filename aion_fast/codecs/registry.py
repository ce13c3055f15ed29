"""Which codec class tokenizes which modality (the reference's mapping, resolved lazily)."""

from __future__ import annotations

import importlib

from aion_fast import modalities as m

_LOG_SCALARS = {
    m.LegacySurveyFluxG, m.LegacySurveyFluxR, m.LegacySurveyFluxI, m.LegacySurveyFluxZ,
    m.LegacySurveyFluxW1, m.LegacySurveyFluxW2, m.LegacySurveyFluxW3, m.LegacySurveyFluxW4,
    m.LegacySurveyShapeR, m.GaiaFluxG, m.GaiaFluxBp, m.GaiaFluxRp, m.GaiaParallax,
}  # fmt: skip
_MULTI_SCALARS = {m.GaiaXpBp, m.GaiaXpRp}
_GRID_SCALARS = {m.Z}

_CODEC_MODULES = {
    "ImageCodec": "aion_fast.codecs.image",
    "SpectrumCodec": "aion_fast.codecs.spectrum",
    "ScalarFieldCodec": "aion_fast.codecs.scalar_field",
    "CatalogCodec": "aion_fast.codecs.catalog",
    "ScalarCodec": "aion_fast.codecs.scalar",
    "LogScalarCodec": "aion_fast.codecs.scalar",
    "MultiScalarCodec": "aion_fast.codecs.scalar",
    "GridScalarCodec": "aion_fast.codecs.scalar",
}


def codec_class_name(modality_type: type[m.Modality]) -> str | None:
    """Name of the codec class of a modality class, or None if it has none."""
    if issubclass(modality_type, m.Image):
        return "ImageCodec"
    if issubclass(modality_type, m.Spectrum):
        return "SpectrumCodec"
    if issubclass(modality_type, m.LegacySurveySegmentationMap):
        return "ScalarFieldCodec"
    if issubclass(modality_type, m.LegacySurveyCatalog):
        return "CatalogCodec"
    if modality_type in _LOG_SCALARS:
        return "LogScalarCodec"
    if modality_type in _MULTI_SCALARS:
        return "MultiScalarCodec"
    if modality_type in _GRID_SCALARS:
        return "GridScalarCodec"
    if issubclass(modality_type, m.Scalar) and modality_type is not m.Scalar:
        return "ScalarCodec"
    return None


def codec_class_for(modality_type: type[m.Modality]):
    """The codec class of a modality class (imported on demand), or None."""
    name = codec_class_name(modality_type)
    if name is None:
        return None
    return getattr(importlib.import_module(_CODEC_MODULES[name]), name)
