"""The one table from survey columns to AION modalities, and the choice of what a file contributes.

Columns are named as the Multimodal Universe (MMU) HDF5 release names them (``image_array``, ``spectrum_flux``,
``FLUX_G``, ``coeff``, ...) and keyed ``(survey, name)``: ``survey`` is the survey a cross-matched file's prefix names,
or None for an unprefixed column (which belongs to the file's own survey). :func:`select` turns a file's columns into
:class:`Use` entries, one per modality, from

* the survey defaults (:data:`SURVEY_DEFAULT_GROUPS`: what each survey measured), or the requested groups;
* the model: a modality is used only if ``accepts`` says so (token key in the checkpoint and its codec present);
* one source per modality: two surveys giving the same token key is an error naming both and ``--source``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from aion_fast import modalities as m

__all__ = [
    "ID_COLUMNS",
    "MODALITY_GROUPS",
    "SCALAR_COLUMNS",
    "SCALAR_SENTINELS",
    "SURVEY_DEFAULT_GROUPS",
    "SURVEY_IMAGE_BANDS",
    "SURVEY_PREFIXES",
    "ColumnKey",
    "Selection",
    "SourceConflictError",
    "Use",
    "parse_sources",
    "select",
]

#: ``(survey or None, MMU column name)``.
ColumnKey = tuple[str | None, str]

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

#: Scalar values that catalogues write for "not measured" (DESI's targeting fluxes hold -99): absent, never encoded.
SCALAR_SENTINELS = (-99.0, -999.0, -9999.0)

#: Every group ``--modalities`` accepts, with the modalities it may contribute.
MODALITY_GROUPS: dict[str, tuple[type[m.Modality], ...]] = {
    "image": (m.LegacySurveyImage, m.HSCImage),
    "spectrum": (m.DESISpectrum, m.SDSSSpectrum),
    "photometry": tuple(mod for mod, group in SCALAR_COLUMNS.values() if group == "photometry"),
    "gaia": (m.GaiaXpBp, m.GaiaXpRp, *(mod for mod, group in SCALAR_COLUMNS.values() if group == "gaia")),
    "redshift": (m.Z,),
    "position": (m.Ra, m.Dec),
    "catalog": (m.LegacySurveyCatalog,),
    "segmentation": (m.LegacySurveySegmentationMap,),
}

#: What each survey measured: the groups a file of that survey contributes when ``--modalities`` is not given.
#: A DESI file's Legacy Survey targeting photometry and every file's redshift or position are used only on request.
SURVEY_DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "legacysurvey": ("image", "photometry", "catalog", "segmentation"),
    "ssl_legacysurvey": ("image",),
    "hsc": ("image", "photometry"),
    "desi": ("spectrum",),
    "sdss": ("spectrum",),
    "gaia": ("gaia",),
}
#: Defaults of a file whose survey is unknown (no survey folder in its path, no prefix).
UNKNOWN_SURVEY_GROUPS = ("image", "spectrum", "photometry", "gaia", "catalog", "segmentation")

#: Id columns, most specific first: the survey's own id wins over positions in the file.
ID_COLUMNS = ("object_id", "source_id", "TARGETID", "targetid", "SPECOBJID", "specobjid", "objid", "OBJID")

_IMAGE_SURVEYS = {"legacysurvey": m.LegacySurveyImage, "ssl_legacysurvey": m.LegacySurveyImage, "hsc": m.HSCImage}
#: Bands of an image column that has no ``image_band`` beside it, in channel order: the AION tutorials'
#: ``legacysurvey_image_flux`` is given to ``LegacySurveyImage`` with DES-G/R/I/Z.
SURVEY_IMAGE_BANDS = {"legacysurvey": ("DES-G", "DES-R", "DES-I", "DES-Z"),
                      "hsc": ("HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y")}  # fmt: skip
_SPECTRUM_SURVEYS = {"desi": m.DESISpectrum, "sdss": m.SDSSSpectrum}
CATALOG_FIELDS = ("X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R")


class SourceConflictError(ValueError):
    """Two surveys of one file give the same modality and nothing says which to use."""


@dataclass(frozen=True)
class Use:
    """One modality a file contributes.

    Attributes:
        kind: ``"image"``, ``"spectrum"``, ``"scalar"``, ``"xp"``, ``"catalog"`` or ``"segmentation"``.
        group: its ``--modalities`` group.
        survey: the survey whose columns it reads (None: the file's own, unknown).
        columns: role -> column key, e.g. ``{"flux": (None, "image_array"), "band": (None, "image_band")}``.
        modalities: the modality classes it may produce (images and spectra of an unknown survey are told apart per
            row by their bands or wavelength grid); only those the model accepts.
    """

    kind: str
    group: str
    survey: str | None
    columns: Mapping[str, ColumnKey]
    modalities: tuple[type[m.Modality], ...]


@dataclass(frozen=True)
class Selection:
    """What one file contributes (see :func:`select`).

    Attributes:
        uses: the modalities read, in a fixed order.
        id_column: the column holding object ids, or None (ids are then ``<relative path>:<row>``).
        position_columns: ``(ra, dec)`` column keys, or None.
        not_in_model: modality class names the file has but the model cannot take, with the reason.
        unusable: group -> why the file's columns of a wanted group cannot be read (an ``image_array`` without
            ``image_band``); every object gets a ledger row for it.
        spectrum_grid: ``(lambda_min, resolution, num_pixels)`` of the spectrum codec's latent grid (set by the
            job): a spectrum that misses it is a ledger row; None = not checked.
    """

    uses: tuple[Use, ...]
    id_column: ColumnKey | None
    position_columns: tuple[ColumnKey, ColumnKey] | None
    not_in_model: Mapping[str, str] = field(default_factory=dict)
    unusable: Mapping[str, str] = field(default_factory=dict)
    spectrum_grid: tuple[float, float, int] | None = None

    def modality_names(self) -> list[str]:
        return sorted({cls.__name__ for use in self.uses for cls in use.modalities})


def _candidates(columns: Collection[ColumnKey], file_survey: str | None) -> list[Use]:
    """Every modality the columns can give, before defaults, model and conflicts are applied."""
    present = set(columns)
    surveys = sorted({s for s, _ in present}, key=lambda s: (s is not None, s or ""))
    uses: list[Use] = []
    for survey in surveys:
        own = survey if survey is not None else file_survey

        def key(name: str, survey: str | None = survey) -> ColumnKey:
            return (survey, name)

        if key("image_array") in present and (key("image_band") in present or own in SURVEY_IMAGE_BANDS):
            roles = {"flux": key("image_array")}
            roles.update({r: key(f"image_{r}") for r in ("band", "mask", "ivar") if key(f"image_{r}") in present})
            classes = (_IMAGE_SURVEYS[own],) if own in _IMAGE_SURVEYS else (m.LegacySurveyImage, m.HSCImage)
            uses.append(Use("image", "image", survey, roles, classes))
        if key("spectrum_flux") in present and key("spectrum_lambda") in present:
            roles = {"flux": key("spectrum_flux"), "lambda": key("spectrum_lambda")}
            roles.update({r: key(f"spectrum_{r}") for r in ("ivar", "mask") if key(f"spectrum_{r}") in present})
            classes = (_SPECTRUM_SURVEYS[own],) if own in _SPECTRUM_SURVEYS else (m.DESISpectrum, m.SDSSSpectrum)
            uses.append(Use("spectrum", "spectrum", survey, roles, classes))
        for column, (cls, group) in SCALAR_COLUMNS.items():
            if key(column) in present:
                uses.append(Use("scalar", group, survey, {"value": key(column)}, (cls,)))
        if key("coeff") in present:
            uses.append(Use("xp", "gaia", survey, {"coeff": key("coeff")}, (m.GaiaXpBp, m.GaiaXpRp)))
        else:
            for role, cls in (("bp_coefficients", m.GaiaXpBp), ("rp_coefficients", m.GaiaXpRp)):
                if key(role) in present:
                    uses.append(Use("xp", "gaia", survey, {role: key(role)}, (cls,)))
        if all(key(f"catalog_{f}") in present for f in CATALOG_FIELDS):
            roles = {f: key(f"catalog_{f}") for f in CATALOG_FIELDS}
            if key("image_array") in present:  # catalogue pixels are positions in the image stamp
                roles["image"] = key("image_array")
            uses.append(Use("catalog", "catalog", survey, roles, (m.LegacySurveyCatalog,)))
        if key("object_mask") in present:
            uses.append(Use("segmentation", "segmentation", survey, {"mask": key("object_mask")},
                            (m.LegacySurveySegmentationMap,)))  # fmt: skip
        positions = _positions(present, survey)
        if positions is not None:
            uses.append(Use("scalar", "position", survey, {"value": positions[0]}, (m.Ra,)))
            uses.append(Use("scalar", "position", survey, {"value": positions[1]}, (m.Dec,)))
    return uses


def _positions(present: Collection[ColumnKey], survey: str | None) -> tuple[ColumnKey, ColumnKey] | None:
    for ra, dec in (("ra", "dec"), ("RA", "DEC"), ("TARGET_RA", "TARGET_DEC")):
        if (survey, ra) in present and (survey, dec) in present:
            return (survey, ra), (survey, dec)
    return None


def _surveys_in_order(columns: Collection[ColumnKey], file_survey: str | None) -> list[str | None]:
    """Unprefixed first, then the file's own survey's prefix, then the others alphabetically."""
    surveys = {s for s, _ in columns}
    return sorted(surveys, key=lambda s: (s is not None, s != file_survey, s or ""))


def _label(survey: str | None, file_survey: str | None) -> str:
    return survey or file_survey or "unprefixed"


def select(
    columns: Collection[ColumnKey],
    *,
    file_survey: str | None = None,
    groups: Collection[str] | None = None,
    sources: Mapping[str, str] | None = None,
    accepts: Callable[[type[m.Modality]], str | None] | None = None,
    shared: Mapping[ColumnKey, Sequence[str]] | None = None,
    what: str = "input",
) -> Selection:
    """Chooses the modalities, id and position columns of one file.

    Args:
        columns: the file's column keys ``(survey or None, MMU name)``.
        file_survey: the survey of unprefixed columns (from the file's path), or None.
        groups: ``--modalities``: exactly these groups, from every survey that has them; None: each survey's
            :data:`SURVEY_DEFAULT_GROUPS`.
        sources: ``--source``: group -> the survey whose columns give it, for files where two surveys give it.
        accepts: modality class -> None if the model takes it, else the reason it does not (None: all accepted).
        shared: unprefixed columns two surveys of a cross-match both have (only one's values are stored), with
            those surveys; using one needs ``sources`` to name its survey.
        what: the file, for messages.

    Raises:
        ValueError: an unknown group, or a ``--source`` survey the file lacks.
        SourceConflictError: two surveys give one modality and ``sources`` does not pick one.
    """
    if groups is not None:
        unknown = sorted(set(groups) - set(MODALITY_GROUPS))
        if unknown:
            raise ValueError(f"modalities {unknown} are unknown; choose from {list(MODALITY_GROUPS)}.")
    sources = dict(sources or {})
    uses = []
    for use in _candidates(columns, file_survey):
        if groups is not None and use.group not in groups:  # not asked for: its source needs no choosing
            continue
        owners = next((shared[k] for k in use.columns.values() if k in (shared or {})), None)
        if owners is not None:  # one column, two surveys' values possible: only the user can say whose
            chosen = sources.get(use.group)
            if chosen not in owners:
                column = next(iter(use.columns.values()))[1]
                raise SourceConflictError(
                    f"{what}: column {column} ({use.group}) may hold {' or '.join(owners)} values (a cross-match "
                    f"keeps one survey's); say whose with "
                    f"{' or '.join(f'--source {use.group}={o}' for o in owners)}, or leave {use.group} out."
                )
            use = Use(use.kind, use.group, chosen, use.columns, use.modalities)
        own = use.survey if use.survey is not None else file_survey
        wanted = groups if groups is not None else SURVEY_DEFAULT_GROUPS.get(own, UNKNOWN_SURVEY_GROUPS)
        if use.group not in wanted:
            continue
        if use.group in sources and _label(use.survey, file_survey) != sources[use.group]:
            continue
        uses.append(use)
    for group, survey in sources.items():
        offered = {_label(u.survey, file_survey) for u in _candidates(columns, file_survey) if u.group == group}
        if offered and survey not in offered:
            raise ValueError(f"{what}: --source {group}={survey}, but its {group} comes from {sorted(offered)}; "
                             f"pick one of those.")  # fmt: skip
    not_in_model: dict[str, str] = {}
    if accepts is not None:
        kept = []
        for use in uses:
            ok = []
            for cls in use.modalities:
                reason = accepts(cls)
                if reason is None:
                    ok.append(cls)
                else:
                    not_in_model[cls.__name__] = reason
            if ok:
                kept.append(Use(use.kind, use.group, use.survey, use.columns, tuple(ok)))
        uses = kept
    by_key: dict[str, list[Use]] = {}
    for use in uses:
        for cls in use.modalities:
            by_key.setdefault(cls.token_key, []).append(use)
    for key, givers in by_key.items():
        if len({_label(u.survey, file_survey) for u in givers}) > 1:
            names = [f"{next(iter(u.columns.values()))[1]} ({_label(u.survey, file_survey)})" for u in givers]
            group = givers[0].group
            options = " or ".join(f"--source {group}={_label(u.survey, file_survey)}" for u in givers)
            raise SourceConflictError(
                f"{what}: {key} is given by two surveys' columns: {', '.join(names)}; choose one with {options}."
            )
    id_column = None
    for survey in _surveys_in_order(columns, file_survey):
        id_column = next(((survey, c) for c in ID_COLUMNS if (survey, c) in columns), None)
        if id_column is not None:
            break
    positions = None
    for survey in _surveys_in_order(columns, file_survey):
        positions = _positions(columns, survey)
        if positions is not None:
            break
    unusable: dict[str, str] = {}
    for survey in sorted({s for s, _ in columns}, key=lambda s: s or ""):
        own = survey if survey is not None else file_survey
        wanted = groups if groups is not None else SURVEY_DEFAULT_GROUPS.get(own, UNKNOWN_SURVEY_GROUPS)
        for group, have, need in (("image", "image_array", "image_band"), ("spectrum", "spectrum_flux",
                                                                             "spectrum_lambda")):  # fmt: skip
            if group in wanted and (survey, have) in columns and (survey, need) not in columns:
                unusable[group] = (f"{_label(survey, file_survey)} column {have} has no {need} column beside it, so "
                                   f"it cannot be read; add {need} to the file or leave {group} out")  # fmt: skip
    return Selection(tuple(uses), id_column, positions, not_in_model, unusable)


def parse_sources(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--source`` values (``GROUP=SURVEY``, repeatable or comma-separated) -> ``((group, survey), ...)``.

    Raises:
        ValueError: a value without ``=``, or a group not in :data:`MODALITY_GROUPS`.
    """
    pairs = []
    for value in ",".join(values).split(","):
        if not value.strip():
            continue
        group, sep, survey = value.strip().partition("=")
        if not sep or not group or not survey:
            raise ValueError(f"--source {value!r}: give GROUP=SURVEY, e.g. --source photometry=legacysurvey.")
        if group not in MODALITY_GROUPS:
            raise ValueError(f"--source {value!r}: {group!r} is not a modality group; choose from "
                             f"{list(MODALITY_GROUPS)}.")  # fmt: skip
        pairs.append((group, survey))
    return tuple(pairs)
