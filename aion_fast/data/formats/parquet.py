r"""``mmu-parquet``: the MMU data as published on the Hugging Face hub, Parquet shards
``<config>/train-000NN-of-000MM.parquet`` holding the HF builders' nested features (see
:mod:`aion_fast.data.formats.nested`).

Read one row group at a time with pyarrow, and only the leaf asked for (``image.flux`` without ``image.ivar``);
the last row group read of each leaf is kept, so consecutive row ranges inside one row group decode it once. A whole
shard is never held in memory.
"""

from __future__ import annotations

import bisect
import os

import numpy as np

from aion_fast.data.formats.base import Column, locate
from aion_fast.data.formats.nested import Leaf, NestedSource, flatten_schema, leaf_to_numpy, select, survey_from_fields

__all__ = ["ParquetSource", "is_parquet"]


def is_parquet(path: str) -> bool:
    """True if ``path`` is a file with the Parquet magic ``PAR1`` at both ends."""
    if not os.path.isfile(path) or os.path.getsize(path) < 12:
        return False
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(-4, os.SEEK_END)
        return head == b"PAR1" and handle.read(4) == b"PAR1"


class ParquetSource(NestedSource):
    """One HF Parquet shard."""

    format = "mmu-parquet"

    def __init__(self, path: str | os.PathLike):
        import pyarrow.parquet as pq

        self.path = str(path)
        self._file = pq.ParquetFile(self.path)
        schema = self._file.schema_arrow
        survey, self.relative_name = locate(self.path)
        self.survey = survey or survey_from_fields(schema.names)
        self._leaves: dict[Column, Leaf] = {
            (None, leaf.canonical): leaf for leaf in flatten_schema(schema, self.survey)
        }
        self.columns = {key: leaf.raw for key, leaf in self._leaves.items()}
        metadata = self._file.metadata
        self.num_rows = metadata.num_rows
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self._cache: dict[str, tuple[int, object]] = {}
        self._shapes: dict[Column, tuple[int, ...]] = {}

    def close(self) -> None:
        self._cache.clear()
        self._file.close()

    def _group(self, leaf: Leaf, index: int):
        cached = self._cache.get(leaf.raw)
        if cached is not None and cached[0] == index:
            return cached[1]
        # Only this leaf's column chunks are read (a dotted path selects one struct field).
        table = self._file.read_row_group(index, columns=[leaf.raw if leaf.layout != "list_of_structs" else leaf.top])
        array = select(table.column(leaf.top), leaf)
        self._cache[leaf.raw] = (index, array)
        return array

    def read(self, column: Column, start: int, stop: int) -> np.ndarray:
        import pyarrow as pa

        self._check_range(column, start, stop)
        leaf = self._leaves[column]
        pieces = []
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        for index in range(first, len(self._starts) - 1):
            lo, hi = self._starts[index], self._starts[index + 1]
            if lo >= stop:
                break
            if hi <= start:
                continue
            array = self._group(leaf, index)
            pieces.append(array.slice(max(start, lo) - lo, min(stop, hi) - max(start, lo)))
        if not pieces:
            return leaf_to_numpy(select(self._empty(leaf), leaf), leaf)
        array = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
        return leaf_to_numpy(array, leaf)

    def _empty(self, leaf: Leaf):
        return self._file.schema_arrow.empty_table().column(leaf.top)

    def chunk_rows(self) -> int:
        return int(self._starts[1]) if len(self._starts) > 1 else 1
