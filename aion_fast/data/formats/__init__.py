r"""Input formats of Multimodal Universe (MMU) and AION data, as a registry; the format is read from the content.

=====================  ==================================================================================
``mmu-hdf5``           MMU native HDF5 (``<survey>/<config>/healpix=N/001-of-001.hdf5``)
``mmu-parquet``        MMU Parquet shards from the hub (``<config>/train-000NN-of-000MM.parquet``)
``mmu-arrow``          a ``save_to_disk`` dataset directory (MMU ``cross_match_datasets`` output)
``aion-tutorial-hdf5`` the AION tutorials' cross-matched columns (``legacysurvey_image_flux``, ...) in HDF5
``aion-tutorial-fits`` the same tables as the tutorials download them (FITS binary tables)
=====================  ==================================================================================

Every format opens as a :class:`~aion_fast.data.formats.base.Source` whose columns carry MMU HDF5 names, so one
modality layer reads them all. ``python -m aion_fast.data.formats FILE`` prints :func:`describe`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aion_fast.data.formats.base import Column, Source, locate, note_for, split_prefix

__all__ = [
    "FORMATS",
    "Format",
    "Column",
    "Source",
    "describe",
    "describe_text",
    "detect",
    "discover",
    "locate",
    "open_source",
    "split_prefix",
]


@dataclass(frozen=True)
class Format:
    """A registered input format: ``name``, one-line ``summary``, and ``open(path) -> Source``."""

    name: str
    summary: str
    open: Callable[[str], Source]


def _open_hdf5(path: str) -> Source:
    from aion_fast.data.formats.hdf5 import HDF5Source

    return HDF5Source(path)


def _open_parquet(path: str) -> Source:
    from aion_fast.data.formats.parquet import ParquetSource

    return ParquetSource(path)


def _open_arrow(path: str) -> Source:
    from aion_fast.data.formats.arrow import ArrowDirSource

    return ArrowDirSource(path)


def _open_fits(path: str) -> Source:
    from aion_fast.data.formats.fits import FITSTableSource

    return FITSTableSource(path)


#: The registry: format name -> :class:`Format`.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("mmu-hdf5", "MMU native HDF5 (<survey>/<config>/healpix=N/001-of-001.hdf5)", _open_hdf5),
        Format("mmu-parquet", "MMU Parquet shard from the hub (<config>/train-000NN-of-000MM.parquet)", _open_parquet),
        Format("mmu-arrow", "save_to_disk dataset directory (MMU cross-match output)", _open_arrow),
        Format(
            "aion-tutorial-hdf5",
            "AION tutorial cross-matched columns (legacysurvey_image_flux, ...) in HDF5",
            _open_hdf5,
        ),
        Format("aion-tutorial-fits", "AION tutorial cross-matched FITS table", _open_fits),
    )
}


def _supported() -> str:
    return ", ".join(FORMATS)


def _container(path: str) -> str | None:
    """The container a path's content is: ``"arrow"``, ``"parquet"``, ``"hdf5"``, ``"fits"`` or None (magic
    bytes only; nothing is parsed)."""
    from aion_fast.data.formats.arrow import is_arrow_dir
    from aion_fast.data.formats.fits import is_fits
    from aion_fast.data.formats.hdf5 import is_hdf5
    from aion_fast.data.formats.parquet import is_parquet

    if os.path.isdir(path):
        return "arrow" if is_arrow_dir(path) else None
    for kind, test in (("parquet", is_parquet), ("hdf5", is_hdf5), ("fits", is_fits)):
        try:
            if test(path):
                return kind
        except OSError:
            return None
    return None


def detect(path: str | os.PathLike) -> str:
    """The registry name of a file's or directory's format, from its content (never its extension).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a supported format (one line naming the path and the supported formats).
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    kind = _container(path)
    if kind == "arrow":
        return "mmu-arrow"
    if kind == "parquet":
        return "mmu-parquet"
    if kind == "fits":
        return "aion-tutorial-fits"
    if kind == "hdf5":
        import h5py

        from aion_fast.data.formats.hdf5 import is_tutorial_columns

        try:
            with h5py.File(path, "r") as handle:
                names = list(handle.keys())
        except OSError as error:
            raise ValueError(f"{path} starts like HDF5 but cannot be read ({error}); the file is truncated or "
                             f"damaged: download or copy it again, or leave it out.") from None  # fmt: skip
        return "aion-tutorial-hdf5" if is_tutorial_columns(names) else "mmu-hdf5"
    what = "a directory without dataset_info.json and state.json" if os.path.isdir(path) else "not a known format"
    raise ValueError(f"{path}: {what}; supported input formats: {_supported()}.")


def open_source(path: str | os.PathLike) -> Source:
    """Opens one shard in the format its content shows (see :func:`detect`)."""
    name = detect(path)
    try:
        if name.endswith("hdf5"):
            from aion_fast.data.formats.hdf5 import HDF5Source

            return HDF5Source(str(path), name)
        return FORMATS[name].open(str(path))
    except OSError as error:  # h5py / pyarrow on a truncated or damaged file: name it
        raise ValueError(f"{path} cannot be read as {name} ({error}); the file is truncated or damaged: download or "
                         f"copy it again, or leave it out.") from None  # fmt: skip


def _walk(directory: str) -> list[str]:
    if _container(directory) == "arrow":
        return [directory]
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        keep = []
        for d in dirs:
            full = os.path.join(root, d)
            if d.startswith("."):
                continue
            if _container(full) == "arrow":
                found.append(full)
            else:
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            full = os.path.join(root, f)
            if not f.startswith(".") and _container(full) is not None:
                found.append(full)
    return found


def discover(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files, globs and directories -> the sorted, de-duplicated shard paths they name.

    A directory is searched recursively for shards recognised by content (HDF5, Parquet and FITS files; Arrow
    dataset directories, which are not entered). A named file must be of a supported format.

    Raises:
        FileNotFoundError: a path does not exist, or a glob matches nothing.
        ValueError: a named file is of no supported format, or a directory holds no shard.
    """
    shards: list[str] = []
    for entry in paths:
        entry = str(entry)
        if os.path.exists(entry):
            matches = [entry]
        elif glob.has_magic(entry):
            matches = sorted(glob.glob(entry, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{entry}: no file matches this pattern")
        else:
            raise FileNotFoundError(f"{entry}: no such file or directory")
        for match in matches:
            if os.path.isdir(match):
                found = _walk(match)
                if not found and entry == match:
                    raise ValueError(
                        f"{match}: no input shard below this directory; supported input formats: {_supported()}."
                    )
                shards += found
            elif _container(match) is not None:
                shards.append(match)
            elif entry == match:
                raise ValueError(f"{match}: not a known format; supported input formats: {_supported()}.")
    return sorted({os.path.normpath(s) for s in shards})


def describe(source: Source) -> list[dict]:
    """The declarative mapping of a source: one dict per column with ``column`` (raw name), ``survey`` (from the
    prefix; None = the file's own), ``canonical`` (MMU HDF5 name), ``dtype``, ``shape`` (one row) and ``note``
    (units, mask polarity, sentinels)."""
    rows = []
    for key in sorted(source.columns, key=lambda k: (k[0] or "", k[1])):
        sample = source.read(key, 0, min(1, source.num_rows))
        shape = source.row_shape(key) if source.num_rows else tuple(sample.shape[1:])
        rows.append(
            dict(
                column=source.columns[key],
                survey=key[0],
                canonical=key[1],
                dtype=sample.dtype.str,
                shape=tuple(int(s) for s in shape),
                note=note_for(key[1], sample.dtype),
            )
        )
    return rows


def describe_text(source: Source) -> str:
    """:func:`describe` as the text ``aion-fast encode --list-columns`` prints."""
    lines = [
        f"{source.path}: {source.format}, {source.num_rows} rows, survey {source.survey or 'unknown'}, "
        f"name {source.relative_name}"
    ]
    table = [
        (r["column"], f"{r['survey'] or '-'}:{r['canonical']}", r["dtype"], str(r["shape"]), r["note"])
        for r in describe(source)
    ]
    widths = [
        max([len(row[i]) for row in table] + [len(h)]) for i, h in enumerate(("column", "key", "dtype", "row shape"))
    ]
    header = ("column", "survey:canonical", "dtype", "row shape", "note")
    widths[1] = max(widths[1], len(header[1]))
    for row in [header, *table]:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return "\n".join(line.rstrip() for line in lines)
