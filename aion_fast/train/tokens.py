"""Token shards (the output of ``aion-fast tokenize``) and the dataset that mixes them for training.

**Token shard layout.** One folder per input MMU file, ``<output>/<shard name>/``, written under
``<shard name>.tmp/`` and renamed into place when complete (so a folder without ``.tmp`` is always whole):

=====================  ======================================================================================
``meta.json``          format tag, input file (path, size, mtime, SHA-256), codec checkpoint (path and tensor
                       digest of its ``codecs/`` folder), token keys with ``num_tokens``/``kind``/``dtype``, object
                       count, per-key presence counts, modality groups, issue count
``<token key>.npy``    ``(N, n_key)`` int16 token ids (every vocabulary is < 2**15), zeros where absent
``present.npy``        ``(N, K)`` bool, per object and key (column order = ``meta["keys"]``): True where the object
                       has that modality's tokens
``object_id.npy``      ``(N,)`` fixed-width unicode object ids
``row.npy``            ``(N,)`` int64 row of each object in the input file
``issues.json``        one ``{"row", "object_id", "modality", "reason"}`` per unusable modality of an object, and
                       ``modality == "*"`` for objects left with none (they stay in the shard, with no presence)
=====================  ======================================================================================

Every array is read memory-mapped (:func:`numpy.load` with ``mmap_mode="r"``): only the rows a batch needs are read.

**Mixing.** :class:`MixedTokenDataset` draws each batch object's source (``{"legacysurvey": [...], "desi": [...],
"legacysurvey_x_desi": [...]}``) with the configured weights, then takes that source's next object in a shuffled
order. The source draws are a function of ``(seed, batch index)`` only, so every rank takes the same number of
objects from each source at each step; each source's order is a permutation of its objects by ``(seed, source,
source epoch)``, cut into ``world_size`` interleaved slices, so the ranks' objects are disjoint within a source epoch.
The iterator's whole position is ``state_dict()`` (batch index, and per source its epoch and cursor):
``load_state_dict`` resumes with exactly the batches an uninterrupted run would have yielded next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aion_fast.model.modality_info import MODALITY_INFO, SEQUENCE

__all__ = [
    "SHARD_FORMAT",
    "MixedTokenDataset",
    "TokenBatch",
    "TokenShard",
    "collate_token_batches",
    "find_token_shards",
]

#: ``meta.json`` ``format`` of the shards this module reads and :mod:`aion_fast.train.tokenize` writes.
SHARD_FORMAT = "aion_fast.token_shard/1"


@dataclass
class TokenBatch:
    """Tokens of a batch of objects, every key for every object, with which tokens exist.

    Attributes:
        tokens: token key -> ``(B, n_key)`` int64 token ids; rows of objects that lack the modality hold 0.
        present: token key -> ``(B, n_key)`` bool, True where the object has that token (for sequence keys, only
            its non-padding entries).
        object_ids: ``B`` object ids.
        sources: ``B`` source names (which shard group each object came from; empty when not from a mix).
    """

    tokens: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    object_ids: list[str]
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.object_ids)

    @property
    def size(self) -> int:
        """Number of objects ``B``."""
        return len(self.object_ids)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> TokenBatch:
        """A copy with every tensor on ``device``."""
        return TokenBatch(
            tokens={k: v.to(device, non_blocking=non_blocking) for k, v in self.tokens.items()},
            present={k: v.to(device, non_blocking=non_blocking) for k, v in self.present.items()},
            object_ids=list(self.object_ids),
            sources=list(self.sources),
        )

    def pin_memory(self) -> TokenBatch:
        """Pins every tensor (called by ``DataLoader(pin_memory=True)``)."""
        return TokenBatch(
            tokens={k: v.pin_memory() for k, v in self.tokens.items()},
            present={k: v.pin_memory() for k, v in self.present.items()},
            object_ids=list(self.object_ids),
            sources=list(self.sources),
        )

    def object_present(self) -> dict[str, torch.Tensor]:
        """token key -> ``(B,)`` bool: the object has at least one token of that key."""
        return {k: v.any(dim=1) for k, v in self.present.items()}


class TokenShard:
    """One tokenized input file (a folder written by ``aion-fast tokenize``), memory-mapped.

    Args:
        path: the shard folder (holding ``meta.json``).

    Attributes:
        path: the folder.
        meta: the parsed ``meta.json``.
        keys: token keys stored, in ``present.npy`` column order.
        num_tokens: token key -> tokens per object.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise ValueError(
                f"{self.path} is not a token shard (no meta.json); pass a folder written by `aion-fast tokenize` "
                f"(folders ending in .tmp are incomplete: re-run the tokenize command to finish them)."
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format") != SHARD_FORMAT:
            raise ValueError(
                f"{meta_path}: format {self.meta.get('format')!r} is not {SHARD_FORMAT!r}; re-tokenize with this "
                f"version of aion_fast."
            )
        self.keys: list[str] = list(self.meta["keys"])
        self.num_tokens: dict[str, int] = {k: int(v["num_tokens"]) for k, v in self.meta["keys"].items()}
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.path / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def __len__(self) -> int:
        return int(self.meta["num_objects"])

    def __repr__(self) -> str:
        return f"TokenShard({str(self.path)!r}, objects={len(self)}, keys={self.keys})"

    @property
    def presence(self) -> np.ndarray:
        """``(N, K)`` bool memory-mapped presence, columns in :attr:`keys` order."""
        return self._array("present")

    @property
    def object_ids(self) -> np.ndarray:
        """``(N,)`` unicode object ids (memory-mapped)."""
        return self._array("object_id")

    @property
    def rows(self) -> np.ndarray:
        """``(N,)`` int64 rows of the objects in the input file."""
        return self._array("row")

    def issues(self) -> list[dict[str, Any]]:
        """The shard's ledger of unusable modalities (``modality == "*"``: the object had none)."""
        return json.loads((self.path / "issues.json").read_text())

    def usable(self) -> np.ndarray:
        """``(n,)`` int64 indices of the objects with at least one modality."""
        return np.flatnonzero(np.asarray(self.presence).any(axis=1)).astype(np.int64)

    def key_tokens(self, key: str) -> np.ndarray:
        """``(N, n_key)`` int16 memory-mapped token ids of one key."""
        if key not in self.num_tokens:
            raise ValueError(f"{self.path}: no token key {key!r}; this shard holds {self.keys}")
        return self._array(key)

    def take(self, rows: Sequence[int] | np.ndarray) -> TokenBatch:
        """The objects at ``rows`` (any order, repeats allowed) as a :class:`TokenBatch` of this shard's keys.

        Args:
            rows: ``(B,)`` object indices in ``[0, len(self))``.

        Returns:
            A :class:`TokenBatch` with ``tokens[key]`` ``(B, n_key)`` int64.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        tokens = {k: torch.empty(len(rows), n, dtype=torch.int64) for k, n in self.num_tokens.items()}
        present = {k: torch.empty(len(rows), n, dtype=torch.bool) for k, n in self.num_tokens.items()}
        object_ids = self.fill(rows, tokens, present, 0)
        return TokenBatch(tokens=tokens, present=present, object_ids=object_ids)

    def fill(
        self, rows: np.ndarray, tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor], start: int
    ) -> list[str]:
        """Writes the objects at ``rows`` into rows ``start:start + len(rows)`` of preallocated batch tensors.

        Args:
            rows: ``(n,)`` int64 object indices in ``[0, len(self))``.
            tokens: token key -> ``(B, >= n_key)`` int64, for every key of this shard (wider sequence columns are
                left untouched).
            present: token key -> ``(B, >= n_key)`` bool, likewise.
            start: first batch row to write.

        Returns:
            The ``n`` object ids.
        """
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"{self.path}: rows must lie in [0, {len(self)}), got [{rows.min()}, {rows.max()}]")
        stop = start + len(rows)
        # Read in increasing row order (sequential pages of the memory maps), then put back in the asked order.
        unique, inverse = np.unique(rows, return_inverse=True)
        has = torch.from_numpy(np.ascontiguousarray(self.presence[unique][inverse]))
        for column, key in enumerate(self.keys):
            width = self.num_tokens[key]
            ids = torch.from_numpy(np.ascontiguousarray(self.key_tokens(key)[unique][inverse]))
            tokens[key][start:stop, :width].copy_(ids)
            flag = has[:, column, None]
            spec = MODALITY_INFO.get(key)
            if spec is not None and spec.kind == SEQUENCE:
                present[key][start:stop, :width] = flag & (ids != spec.padding_idx)
            else:
                present[key][start:stop, :width] = flag
        return [str(v) for v in self.object_ids[unique][inverse].tolist()]

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> TokenBatch:
        """``shard[i]`` (a batch of one), ``shard[a:b]`` or ``shard[[i, j, ...]]``."""
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"object {index} is out of range for a shard of {len(self)} objects")
            return self.take([int(index) % len(self)])
        return self.take(index)


def find_token_shards(directory: str | os.PathLike) -> list[Path]:
    """The complete shard folders under ``directory`` (those with ``meta.json``; ``.tmp`` folders skipped), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory; pass the --output folder of `aion-fast tokenize`.")
    return sorted(p.parent for p in directory.glob("*/meta.json") if not p.parent.name.endswith(".tmp"))


def _union_widths(batches_or_shards: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """token key -> width over several (key -> width) maps: grid keys must agree, sequences take the longest."""
    widths: dict[str, int] = {}
    for mapping in batches_or_shards:
        for key, width in mapping.items():
            if key in widths and widths[key] != width:
                spec = MODALITY_INFO.get(key)
                if spec is None or spec.kind != SEQUENCE:
                    raise ValueError(
                        f"token key {key!r} has {widths[key]} tokens per object in one shard and {width} in another; "
                        f"tokenize every shard with the same codecs."
                    )
                width = max(width, widths[key])
            widths[key] = width
    return widths


def collate_token_batches(batches: Sequence[TokenBatch], widths: Mapping[str, int] | None = None) -> TokenBatch:
    """Concatenates batches along the batch axis over the union of their keys.

    Keys a batch lacks are filled with token 0 and ``present`` False; sequence keys are right-padded with 0 (not
    present) to the longest.

    Args:
        batches: batches to join, in order.
        widths: token key -> tokens per object of the result (default: the union of the batches' keys). Give it to
            include keys no batch has (all absent).

    Returns:
        One :class:`TokenBatch` of ``sum(len(b))`` objects.
    """
    if not batches:
        raise ValueError("collate_token_batches needs at least one TokenBatch")
    if widths is None:
        widths = _union_widths([{k: v.shape[1] for k, v in b.tokens.items()} for b in batches])
    tokens, present = {}, {}
    for key, width in widths.items():
        key_tokens, key_present = [], []
        for batch in batches:
            n = len(batch)
            ids = batch.tokens.get(key)
            if ids is None:
                key_tokens.append(torch.zeros(n, width, dtype=torch.int64))
                key_present.append(torch.zeros(n, width, dtype=torch.bool))
                continue
            if ids.shape[1] > width:
                raise ValueError(f"token key {key!r}: a batch has {ids.shape[1]} tokens per object, more than {width}")
            pad = width - ids.shape[1]
            key_tokens.append(torch.nn.functional.pad(ids, (0, pad)) if pad else ids)
            key_present.append(torch.nn.functional.pad(batch.present[key], (0, pad)) if pad else batch.present[key])
        tokens[key] = torch.cat(key_tokens)
        present[key] = torch.cat(key_present)
    return TokenBatch(
        tokens=tokens,
        present=present,
        object_ids=[i for b in batches for i in b.object_ids],
        sources=[s for b in batches for s in b.sources],
    )


class _Source:
    """The usable objects of one source's shards, addressed by one global index."""

    def __init__(self, name: str, shards: Sequence[str | os.PathLike | TokenShard]):
        if not shards:
            raise ValueError(f"source {name!r} has no shards; give it a non-empty list of token shard folders")
        self.name = name
        self.shards = [s if isinstance(s, TokenShard) else TokenShard(s) for s in shards]
        usable = [s.usable() for s in self.shards]
        self.shard_of = np.concatenate([np.full(len(u), i, dtype=np.int64) for i, u in enumerate(usable)])
        self.row_of = np.concatenate(usable)

    def __len__(self) -> int:
        return len(self.row_of)


class MixedTokenDataset(torch.utils.data.IterableDataset):
    """An endless, deterministic, resumable stream of :class:`TokenBatch` mixing several sources of token shards.

    Args:
        sources: source name -> token shard folders (or :class:`TokenShard`), e.g. ``{"legacysurvey": [...],
            "desi": [...], "legacysurvey_x_desi": [...]}``.
        batch_size: objects per batch (per rank).
        weights: source name -> relative weight (need not sum to 1); default: equal weights. Each object of a batch
            comes from source ``s`` with probability ``weights[s] / sum(weights)``.
        seed: seed of every draw.
        epoch: first epoch number of every source (an offset of the shuffles, like ``DistributedSampler``'s).
        rank, world_size: this process among the data-parallel ones; ranks take disjoint objects.

    Objects without any modality are skipped (they are in the shards' ``issues.json``). Every batch has the same
    keys, the union over all shards (absent keys: token 0, ``present`` False). Iterate in the process that keeps
    the dataset (``DataLoader(num_workers=0)``, or directly): ``state_dict()`` records the batches yielded there.

    Raises:
        ValueError: unknown or negative weights, a source with fewer usable objects than ``world_size``, shards that
            disagree on a key's token count, a bad rank.
    """

    def __init__(
        self,
        sources: Mapping[str, Sequence[str | os.PathLike | TokenShard]],
        batch_size: int,
        weights: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if not sources:
            raise ValueError("sources must name at least one source: {name: [token shard folders]}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank {rank!r} must lie in [0, world_size) with world_size >= 1, got {world_size!r}")
        weights = {name: 1.0 for name in sources} if weights is None else dict(weights)
        unknown, missing = sorted(set(weights) - set(sources)), sorted(set(sources) - set(weights))
        if unknown or missing:
            raise ValueError(f"weights must name exactly the sources {sorted(sources)}: unknown {unknown}, "
                             f"missing {missing}")  # fmt: skip
        if any(not np.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
        self.names = list(sources)
        self.sources = [_Source(name, sources[name]) for name in self.names]
        for source in self.sources:
            if len(source) < world_size:
                raise ValueError(
                    f"source {source.name!r} has {len(source)} objects with a modality, fewer than world_size "
                    f"{world_size}: every rank needs its own objects (add shards, or drop the source)."
                )
        total = sum(weights.values())
        self.probabilities = np.array([weights[name] / total for name in self.names], dtype=np.float64)
        self.batch_size = batch_size
        self.seed, self.base_epoch, self.rank, self.world_size = int(seed), int(epoch), rank, world_size
        self.widths = _union_widths([s.num_tokens for src in self.sources for s in src.shards])
        self._order_cache: dict[tuple[int, int], np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Goes back to the first batch."""
        self.batch_index = 0
        self.source_epoch = [self.base_epoch] * len(self.sources)
        self.cursor = [0] * len(self.sources)

    # ------------------------------------------------------------------------------------------------- draws

    def _source_choices(self, batch_index: int) -> np.ndarray:
        """(batch_size,) source index of every slot of batch ``batch_index`` (the same on every rank)."""
        rng = np.random.default_rng([self.seed, 0x5EED, batch_index])
        return rng.choice(len(self.sources), size=self.batch_size, p=self.probabilities)

    def _rank_order(self, source: int, epoch: int) -> np.ndarray:
        """This rank's objects of one source epoch: its slice of a permutation cut to a multiple of world_size."""
        cache_key = (source, epoch)
        if cache_key not in self._order_cache:
            n = len(self.sources[source])
            permutation = np.random.default_rng([self.seed, source, epoch]).permutation(n)
            permutation = permutation[: n - n % self.world_size]
            if len(self._order_cache) > 2 * len(self.sources):
                self._order_cache.clear()
            self._order_cache[cache_key] = permutation[self.rank :: self.world_size]
        return self._order_cache[cache_key]

    def _next_objects(self, source: int, count: int) -> np.ndarray:
        """The next ``count`` global object indices of ``source`` for this rank, advancing its cursor."""
        taken = []
        while count > 0:
            order = self._rank_order(source, self.source_epoch[source])
            chunk = order[self.cursor[source] : self.cursor[source] + count]
            taken.append(chunk)
            count -= len(chunk)
            self.cursor[source] += len(chunk)
            if self.cursor[source] == len(order):
                self.source_epoch[source] += 1
                self.cursor[source] = 0
        return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)

    def next_batch(self) -> TokenBatch:
        """The next batch (advances the state). Its objects come grouped by source, in source order."""
        counts = np.bincount(self._source_choices(self.batch_index), minlength=len(self.sources))
        tokens = {k: torch.zeros(self.batch_size, w, dtype=torch.int64) for k, w in self.widths.items()}
        present = {k: torch.zeros(self.batch_size, w, dtype=torch.bool) for k, w in self.widths.items()}
        object_ids: list[str] = []
        sources: list[str] = []
        for source_index, source in enumerate(self.sources):
            if counts[source_index] == 0:
                continue
            objects = self._next_objects(source_index, int(counts[source_index]))
            shard_of, row_of = source.shard_of[objects], source.row_of[objects]
            for shard_index in np.unique(shard_of):
                rows = row_of[shard_of == shard_index]
                object_ids += source.shards[shard_index].fill(rows, tokens, present, len(object_ids))
                sources += [source.name] * len(rows)
        self.batch_index += 1
        return TokenBatch(tokens=tokens, present=present, object_ids=object_ids, sources=sources)

    def __iter__(self) -> Iterator[TokenBatch]:
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------------------------------------ resume

    def _identity(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "sources": {name: len(src) for name, src in zip(self.names, self.sources)},
            "probabilities": self.probabilities.tolist(),
        }

    def state_dict(self) -> dict[str, Any]:
        """The iterator's position (JSON-serialisable): restoring it gives the same next batches."""
        return {
            "version": 1,
            **self._identity(),
            "batch_index": self.batch_index,
            "source_epoch": dict(zip(self.names, self.source_epoch)),
            "cursor": dict(zip(self.names, self.cursor)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a position saved by :meth:`state_dict` of a dataset built with the same arguments.

        Raises:
            ValueError: the state comes from another seed, rank, world size, batch size, weights or shard set (the
                resumed stream would not be the uninterrupted one).
        """
        identity = self._identity()
        differing = {k: (state.get(k), v) for k, v in identity.items() if state.get(k) != v}
        if state.get("version") != 1 or differing:
            raise ValueError(
                f"cannot resume MixedTokenDataset: the saved state differs in {differing} (saved, now); build the "
                f"dataset with the same sources, weights, seed, batch_size, rank and world_size."
            )
        self.batch_index = int(state["batch_index"])
        self.source_epoch = [int(state["source_epoch"][name]) for name in self.names]
        self.cursor = [int(state["cursor"][name]) for name in self.names]
