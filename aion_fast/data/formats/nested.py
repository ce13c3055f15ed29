r"""Flattening the Hugging Face (HF) builders' nested features into MMU HDF5 column names, for Parquet and Arrow.

The MMU HF builders (``scripts/<survey>/<survey>.py``) declare ``image`` as ``Sequence({band, flux, mask, ivar,
psf_fwhm, scale})`` and ``spectrum`` as ``Sequence({flux, ivar, lsf_sigma, lambda, mask})``; ``datasets`` stores a
``Sequence`` of a dict as a STRUCT OF LISTS (one list per field; a list of structs is accepted too), ``Array2D`` as
nested lists (an extension type whose storage is read here), ``Image()`` as ``struct<bytes, path>`` (PNG), and
Gaia's groups (``photometry``, ``astrometry``, ...) as plain structs. Each leaf becomes one column named as in the
MMU HDF5 release: ``image.flux`` -> ``image_array`` (C, H, W), ``image.band`` -> ``image_band`` (C,),
``image.mask`` -> ``image_mask`` (C, H, W) (True = good, as in HDF5), ``spectrum.lambda`` -> ``spectrum_lambda``,
``catalog.FLUX_G`` -> ``catalog_FLUX_G`` (20,), ``photometry.phot_g_mean_flux`` -> ``phot_g_mean_flux``,
``spectral_coefficients.coeff`` -> ``coeff`` (110,), Gaia's ``object_id`` -> ``source_id``.

Strings come back as fixed-width bytes, as in the HDF5 release; the builders' ``str(bytes)`` ids (``"b'0001m002-12'"``)
are decoded to the plain id. Spectra of different lengths in one read (SDSS: the builder keeps each file's padding,
and files differ) are padded as the SDSS build script pads: lambda -1, ivar 0, mask True, flux and lsf_sigma repeat
the last value.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np

from aion_fast.data.formats.base import ALIASES, Column, Source

__all__ = ["Leaf", "flatten_schema", "leaf_to_numpy", "survey_from_fields"]

#: HF feature groups whose leaves keep their own names (Gaia's builder).
_PLAIN_GROUPS = (
    "spectral_coefficients",
    "photometry",
    "astrometry",
    "radial_velocity",
    "gspphot",
    "flags",
    "corrections",
)
#: Padding of ragged spectrum columns (as the SDSS build script pads): a value, or None to repeat the last value.
_PAD = {
    "spectrum_lambda": -1.0,
    "spectrum_ivar": 0.0,
    "spectrum_mask": True,
    "spectrum_flux": None,
    "spectrum_lsf_sigma": None,
}

#: Top-level HF features only one survey's builder declares (for files outside a survey folder).
_SURVEY_FEATURES = [
    ("gaia", ("spectral_coefficients", "astrometry")),
    ("legacysurvey", ("catalog", "blobmodel", "object_mask")),
    ("ssl_legacysurvey", ("psfdepth_g", "fiberflux_g", "z_spec")),
    ("hsc", ("a_g", "i_cmodel_mag")),
    ("sdss", ("VDISP", "ZWARNING", "SPECTROFLUX_G")),
    ("desi", ("ZWARN", "FIBERFLUX_G", "FLUX_IVAR_G")),
]


def survey_from_fields(names: list[str]) -> str | None:
    """The survey whose HF builder declares one of these top-level features (None if none matches)."""
    present = set(names)
    for survey, markers in _SURVEY_FEATURES:
        if present.intersection(markers):
            return survey
    return None


@dataclass(frozen=True)
class Leaf:
    """One flattened column.

    Attributes:
        top: top-level field name.
        child: struct field inside it (None for a plain column).
        layout: ``"plain"``, ``"struct"`` (a struct of scalars), ``"struct_of_lists"`` (HF ``Sequence`` of a dict),
            ``"list_of_structs"``, or ``"image"`` (PNG ``struct<bytes, path>``).
        canonical: MMU HDF5 column name.
        ragged: the first axis of a row may vary in length between rows (variable-length spectra).
    """

    top: str
    child: str | None
    layout: str
    canonical: str
    ragged: bool = False

    @property
    def raw(self) -> str:
        return self.top if self.child is None else f"{self.top}.{self.child}"


def _nested_name(parent: str, child: str) -> str:
    if parent == "image":
        return "image_array" if child == "flux" else f"image_{child}"
    if parent in ("spectrum", "catalog"):
        return f"{parent}_{child}"
    if parent in _PLAIN_GROUPS:
        return child
    return f"{parent}_{child}"


def _is_list(pa, t) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _storage(t):
    return getattr(t, "storage_type", t)


def _is_png_struct(pa, t) -> bool:
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} == {"bytes", "path"}


def flatten_schema(schema, survey: str | None) -> list[Leaf]:
    """The leaves of an Arrow schema written by the MMU HF builders (plain columns first, so a top-level ``ra``
    wins over Gaia's ``astrometry.ra``; later duplicates of a canonical name are dropped)."""
    import pyarrow as pa

    leaves: list[Leaf] = []
    nested: list[Leaf] = []
    for field in schema:
        t = _storage(field.type)
        name = field.name
        if _is_png_struct(pa, t):
            leaves.append(Leaf(name, None, "image", ALIASES.get(name, name)))
        elif pa.types.is_struct(t):
            for i in range(t.num_fields):
                child = t.field(i)
                ctype = _storage(child.type)
                layout = "struct_of_lists" if _is_list(pa, ctype) else "struct"
                ragged = name == "spectrum" and layout == "struct_of_lists" and not pa.types.is_fixed_size_list(ctype)
                nested.append(Leaf(name, child.name, layout, _nested_name(name, child.name), ragged))
        elif _is_list(pa, t) and pa.types.is_struct(_storage(t.value_type)):
            inner = _storage(t.value_type)
            for i in range(inner.num_fields):
                child = inner.field(i)
                ragged = name == "spectrum" and not pa.types.is_fixed_size_list(t)
                nested.append(Leaf(name, child.name, "list_of_structs", _nested_name(name, child.name), ragged))
        else:
            canonical = ALIASES.get(name, name)
            if survey == "gaia" and name == "object_id":
                canonical = "source_id"  # the Gaia builder's object_id IS source_id (int64)
            leaves.append(Leaf(name, None, "plain", canonical))
    taken = {leaf.canonical for leaf in leaves}
    for leaf in nested:
        if leaf.canonical not in taken:
            taken.add(leaf.canonical)
            leaves.append(leaf)
    return leaves


def select(array, leaf: Leaf):
    """The Arrow array of one leaf from its top-level column's array (rows unchanged)."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    if leaf.layout in ("plain", "image"):
        return array
    if leaf.layout in ("struct", "struct_of_lists"):
        return array.field(leaf.child)
    # list of structs: regroup the child values of all elements by the list offsets
    values = array.values
    if isinstance(values, pa.ExtensionArray):
        values = values.storage
    return pa.ListArray.from_arrays(array.offsets, values.field(leaf.child))


def _decode_id(value: str) -> bytes:
    if len(value) >= 3 and value[0] == "b" and value[1] in "'\"" and value[-1] == value[1]:
        try:
            literal = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            literal = None
        if isinstance(literal, bytes):
            return literal
    return value.encode("utf-8")


def _strings(values) -> np.ndarray:
    out = [b"" if v is None else _decode_id(v) if isinstance(v, str) else bytes(v) for v in values]
    return np.array(out, dtype=f"S{max(1, max((len(v) for v in out), default=1))}")


def _png(array) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise ValueError(
            "decoding the PNG cut-outs (object_mask, rgb, blobmodel) of an MMU Parquet/Arrow file needs pillow "
            "(pip install pillow)."
        ) from exc
    import io

    images = []
    for entry in array.to_pylist():
        if entry is None or entry.get("bytes") is None:
            raise ValueError("an Image() cell has no PNG bytes (only a path); re-export the shard with the images.")
        images.append(np.asarray(Image.open(io.BytesIO(entry["bytes"]))))
    return np.stack(images) if images else np.zeros((0,), dtype=np.uint8)


def _to_numpy(array, pa) -> np.ndarray | list[np.ndarray]:
    """Arrow array -> numpy (n, *row_shape); a list of per-row arrays when the outer list lengths differ."""
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    t = array.type
    n = len(array)
    if _is_list(pa, t):
        if pa.types.is_fixed_size_list(t):
            lengths = np.full(n, t.list_size, dtype=np.int64)
        else:
            lengths = array.value_lengths().to_numpy(zero_copy_only=False)
        inner = _to_numpy(array.flatten(), pa)
        if isinstance(inner, list):
            raise ValueError(f"nested lists of varying length inside rows are not an MMU layout ({t}).")
        if n == 0:
            return inner.reshape(0, 0, *inner.shape[1:])
        if (lengths == lengths[0]).all():
            return inner.reshape(n, int(lengths[0]), *inner.shape[1:])
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [inner[bounds[i] : bounds[i + 1]] for i in range(n)]
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return _strings(array.to_pylist())
    if pa.types.is_boolean(t):
        return array.to_numpy(zero_copy_only=False).astype(bool)
    return array.to_numpy(zero_copy_only=False)


def _pad(rows: list[np.ndarray], canonical: str) -> np.ndarray:
    width = max(len(r) for r in rows)
    fill = _PAD.get(canonical)
    out = []
    for row in rows:
        missing = width - len(row)
        if missing == 0:
            out.append(row)
        elif fill is None and len(row):
            out.append(np.pad(row, (0, missing), mode="edge"))
        else:
            out.append(np.pad(row, (0, missing), constant_values=0 if fill is None else fill))
    return np.stack(out)


def leaf_to_numpy(array, leaf: Leaf) -> np.ndarray:
    """The numpy rows of a leaf's Arrow array (see the module docstring for strings, PNGs and ragged spectra)."""
    import pyarrow as pa

    if leaf.layout == "image":
        return _png(array)
    values = _to_numpy(array, pa)
    if isinstance(values, list):
        if not leaf.ragged:
            raise ValueError(f"column {leaf.raw}: rows have different lengths, which MMU only allows for spectra.")
        return _pad(values, leaf.canonical)
    return values


class NestedSource(Source):
    """A source over Arrow tables of HF builder features (hub Parquet, cross-match dirs): subclasses set ``_leaves``
    (column -> :class:`Leaf`) and an empty ``_shapes`` cache."""

    _leaves: dict[Column, Leaf]
    _shapes: dict[Column, tuple[int, ...]]

    def row_shape(self, column: Column) -> tuple[int, ...]:
        """Per-row shape of a column, read from the first row; -1 on the axis whose length varies between rows."""
        if column not in self._shapes:
            leaf = self._leaves[column]
            shape = tuple(self.read(column, 0, 1).shape[1:]) if self.num_rows else ()
            if leaf.ragged and shape:
                shape = (-1, *shape[1:])
            self._shapes[column] = shape
        return self._shapes[column]
