"""Scalar quantizers: fixed linear bins, and empirical-CDF bins fitted by reservoir sampling.

A reservoir quantizer keeps a uniform random sample of the values seen so far (Vitter's Algorithm R) and places its
``K`` codebook values at the ``K`` evenly spaced quantiles of that sample, so each code is used about equally often.
A value's index is the number of codebook values strictly below it (codebook values ``0..K-2`` act as bin edges),
and the index decodes to its codebook value. A fit streams values through ``fit`` and ends with ``finalize``.
Variants apply a transform first: natural log with a floor (``ScalarLogReservoirQuantizer``), or a chain of torch
functions such as ``arcsinh`` (compressed variants).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from aion_fast.quantizers.base import Quantizer

#: Element-wise torch functions a compressed quantizer may apply (name -> its inverse).
COMPRESSION_FUNCTIONS: dict[str, str] = {
    "arcsinh": "sinh",
    "sinh": "arcsinh",
    "asinh": "sinh",
    "log": "exp",
    "exp": "log",
    "log10": "exp10",
    "log1p": "expm1",
    "expm1": "log1p",
    "sqrt": "square",
    "square": "sqrt",
    "tanh": "arctanh",
    "arctanh": "tanh",
}


def _check_integer_codes(codes: torch.Tensor, size: int, owner: str) -> None:
    if codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"{owner}.decode takes integer indices, got {codes.dtype}.")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
        raise ValueError(f"{owner} indices must lie in [0, {size}), got [{int(codes.min())}, {int(codes.max())}].")


class ScalarLinearQuantizer(Quantizer):
    """Bins a scalar on ``codebook_size`` evenly spaced values spanning ``range`` (inclusive).

    State dict: ``buckets`` (float32, the codebook values).
    """

    def __init__(self, codebook_size: int, range: tuple[float, float]):  # noqa: A002 - the reference's name
        super().__init__()
        low, high = float(range[0]), float(range[1])
        if not high > low or codebook_size < 2:
            raise ValueError(f"ScalarLinearQuantizer needs range low < high and codebook_size >= 2, got {range}.")
        self.register_buffer("buckets", torch.linspace(low, high, codebook_size))

    @property
    def codebook_size(self) -> int:
        return int(self.buckets.numel())

    @property
    def codebook(self) -> torch.Tensor:
        return self.buckets

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Any-shape values -> int64 indices of the same shape (out-of-range values go to the end bins)."""
        codes = torch.bucketize(z.to(self.buckets.dtype), self.buckets)
        return codes.clamp_(0, self.codebook_size - 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        _check_integer_codes(codes, self.codebook_size, type(self).__name__)
        return self.buckets[codes.long()]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes = self.encode(z)
        used = torch.unique(codes).numel() / self.codebook_size
        return self.decode(codes), z.new_zeros(()), torch.tensor(used)


class ScalarReservoirQuantizer(Quantizer):
    """Empirical-CDF quantizer of one scalar, fitted by streaming reservoir sampling.

    Args:
        codebook_size: number of codes ``K``.
        reservoir_size: number of samples kept to estimate the CDF.
        reservoir_default: initial value of the reservoir slots.

    State dict: ``_reservoir`` (reservoir_size,) and ``_index_to_val`` (codebook_size,), float32.
    """

    def __init__(self, codebook_size: int, reservoir_size: int, reservoir_default: float = 0.0):
        super().__init__()
        if codebook_size < 2 or reservoir_size < 2:
            raise ValueError("reservoir quantizers need codebook_size >= 2 and reservoir_size >= 2.")
        self._codebook_size = int(codebook_size)
        self._reservoir_size = int(reservoir_size)
        self.register_buffer("_reservoir", torch.full((reservoir_size,), float(reservoir_default)))
        # The codebook of a constant reservoir is that constant (what _refresh_codebook computes, without the sort:
        # 110 quantizers of the two Gaia XP codecs are built on every load).
        self.register_buffer("_index_to_val", self._reservoir[:1].expand(codebook_size).clone())
        self._n_total_samples = 0

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        return self._index_to_val

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        """Maps raw values to the space the CDF is estimated in (identity here)."""
        return z

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Maps codebook values back to raw values (identity here)."""
        return z

    def _refresh_codebook(self) -> None:
        """Places the codebook values at evenly spaced quantiles of the reservoir (linear interpolation)."""
        ordered = torch.sort(self._reservoir).values.cpu().numpy()
        reservoir_quantiles = torch.linspace(0, 1, self._reservoir_size).numpy()
        code_quantiles = torch.linspace(0, 1, self._codebook_size).numpy()
        values = np.interp(code_quantiles.astype(np.float64), reservoir_quantiles.astype(np.float64), ordered)
        self._index_to_val.copy_(torch.from_numpy(values).to(self._index_to_val.dtype))

    @property
    def num_samples(self) -> int:
        """Values streamed so far by :meth:`fit` / :meth:`update`."""
        return self._n_total_samples

    @torch.no_grad()
    def fit(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Streams a batch of raw values into the reservoir (Algorithm R); the codebook waits for :meth:`finalize`.

        The ``t``-th value seen overall (0-based) fills slot ``t`` while the reservoir is not full; afterwards it
        replaces slot ``j ~ U{0..t}`` when ``j < reservoir_size``. Later values win ties, as in the sequential
        algorithm. Non-finite values are refused.

        Args:
            z: (N,) raw values.
            generator: optional torch generator for reproducible fits.
        """
        values = self.transform(z.detach().reshape(-1).to(self._reservoir.dtype).cpu())
        if not bool(torch.isfinite(values).all()):
            raise ValueError("reservoir update received NaN/inf values; drop missing measurements first.")
        n, start, k = values.numel(), self._n_total_samples, self._reservoir_size
        fill = max(0, min(k - start, n))
        reservoir = self._reservoir.cpu()
        reservoir[start : start + fill] = values[:fill]
        if fill < n:
            t = torch.arange(start + fill, start + n, dtype=torch.float64)
            slots = torch.floor(torch.rand(n - fill, generator=generator, dtype=torch.float64) * (t + 1)).long()
            keep = slots < k
            slots, order = slots[keep], torch.arange(fill, n)[keep]
            # The last value drawn for a slot wins, as when the draws are applied one after another.
            last = torch.full((k,), -1, dtype=torch.long).scatter_reduce(0, slots, order, reduce="amax")
            hit = last >= 0
            reservoir[hit] = values[last[hit]]
        self._reservoir.copy_(reservoir)
        self._n_total_samples += n

    @torch.no_grad()
    def finalize(self) -> None:
        """Ends a :meth:`fit`: places the codebook at the reservoir's quantiles.

        When fewer values than slots were streamed, the slots are first filled with those values' own evenly
        spaced quantiles, so the unfilled slots' ``reservoir_default`` does not distort the CDF (the reference's
        ``update`` leaves them in).
        """
        seen, size = self._n_total_samples, self._reservoir_size
        if 0 < seen < size:
            values = self._reservoir[:seen].double().cpu().numpy()
            filled = np.quantile(values, np.linspace(0.0, 1.0, size))
            self._reservoir.copy_(torch.from_numpy(filled).to(self._reservoir.dtype))
        self._refresh_codebook()

    @torch.no_grad()
    def update(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """:meth:`fit` then refit the codebook on the reservoir as it is (the reference's streaming update)."""
        self.fit(z, generator=generator)
        self._refresh_codebook()

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Any-shape raw values -> int64 indices in [0, K) of the same shape."""
        edges = self._index_to_val[:-1]
        return torch.bucketize(self.transform(z.to(edges.dtype)), edges)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        _check_integer_codes(codes, self.codebook_size, type(self).__name__)
        return self.inverse_transform(self._index_to_val[codes.long()])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward: updates the reservoir, then returns (quantized, MSE to the input, codes used)."""
        self.update(z)
        codes = self.encode(z)
        quantized = self.decode(codes)
        used = torch.unique(codes).numel() / self.codebook_size
        return quantized, torch.nn.functional.mse_loss(quantized, z), torch.tensor(used)


class ScalarLogReservoirQuantizer(ScalarReservoirQuantizer):
    """Reservoir quantizer of ``log(max(z, exp(min_log_value)))`` (natural log); decodes with ``exp``."""

    def __init__(
        self,
        codebook_size: int,
        reservoir_size: int,
        reservoir_default: float = -3.0,
        min_log_value: float = -3.0,
    ):
        if reservoir_default < min_log_value:
            raise ValueError("reservoir_default must be >= min_log_value.")
        self._min_value = math.exp(min_log_value)
        super().__init__(codebook_size, reservoir_size, reservoir_default)

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.where(z <= self._min_value, self._min_value, z))

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(z)


def _apply_chain(z: torch.Tensor, names: list[str]) -> torch.Tensor:
    for name in names:
        z = torch.pow(10.0, z) if name == "exp10" else getattr(torch, name)(z)
    return z


@functools.lru_cache(maxsize=64)
def _chains_invert(compression_fns: tuple[str, ...], decompression_fns: tuple[str, ...]) -> bool:
    """Whether the decompression chain (applied in reverse) maps compress(1) back to 1; once per pair of chains."""
    probe = torch.tensor([1.0])
    return torch.allclose(_apply_chain(_apply_chain(probe, compression_fns), decompression_fns[::-1]), probe)


class ScalarCompressedReservoirQuantizer(ScalarReservoirQuantizer):
    """Reservoir quantizer of ``compress(z)``, a chain of element-wise torch functions (e.g. ``["arcsinh"]``).

    ``decompression_fns`` are applied in reverse order on decode; the pair must invert each other.
    """

    def __init__(
        self,
        compression_fns: list[str],
        decompression_fns: list[str],
        codebook_size: int,
        reservoir_size: int,
        reservoir_default: float = 0.0,
    ):
        compression_fns, decompression_fns = list(compression_fns), list(decompression_fns)
        supported = set(COMPRESSION_FUNCTIONS) | set(COMPRESSION_FUNCTIONS.values())
        for name in [*compression_fns, *decompression_fns]:
            if name not in supported:
                raise ValueError(f"unsupported compression function {name!r}; choose from {sorted(supported)}.")
        if len(compression_fns) != len(decompression_fns):
            raise ValueError("compression_fns and decompression_fns must have the same length.")
        self.compression_fns = compression_fns
        self.decompression_fns = decompression_fns
        if not _chains_invert(tuple(compression_fns), tuple(decompression_fns)):
            raise ValueError(f"{decompression_fns} does not invert {compression_fns}.")
        super().__init__(codebook_size, reservoir_size, reservoir_default)

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        return _apply_chain(z, self.compression_fns)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        return _apply_chain(z, self.decompression_fns[::-1])


class MultiScalarCompressedReservoirQuantizer(Quantizer):
    """One compressed reservoir quantizer per column of a (B, C) tensor (e.g. the 55 Gaia XP coefficients).

    All columns are encoded in one batched search. State dict: ``quantizers.{i}._reservoir`` / ``._index_to_val``.
    """

    def __init__(
        self,
        compression_fns: list[str],
        decompression_fns: list[str],
        codebook_size: int,
        reservoir_size: int,
        reservoir_default: float = 0.0,
        num_quantizers: int = 1,
    ):
        super().__init__()
        self.quantizers = nn.ModuleList(
            ScalarCompressedReservoirQuantizer(
                compression_fns, decompression_fns, codebook_size, reservoir_size, reservoir_default
            )
            for _ in range(num_quantizers)
        )
        self.num_quantizers = num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.quantizers[0].codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizers[0].codebook

    def _check_columns(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.num_quantizers:
            raise ValueError(f"expected values of shape (batch, {self.num_quantizers}), got {tuple(z.shape)}.")

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C) raw values -> (B, C) int64 indices, column ``c`` binned by its own codebook."""
        self._check_columns(z)
        first = self.quantizers[0]
        edges = torch.stack([q._index_to_val[:-1] for q in self.quantizers])  # (C, K-1)
        compressed = first.transform(z.to(edges.dtype)).T.contiguous()  # (C, B)
        return torch.searchsorted(edges, compressed).T

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C) indices -> (B, C) raw values."""
        self._check_columns(codes)
        _check_integer_codes(codes, self.codebook_size, type(self).__name__)
        table = torch.stack([q._index_to_val for q in self.quantizers])  # (C, K)
        values = torch.gather(table, 1, codes.long().T).T
        return self.quantizers[0].inverse_transform(values)

    @property
    def num_samples(self) -> int:
        """Rows streamed so far."""
        return self.quantizers[0].num_samples

    @torch.no_grad()
    def fit(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Streams a (B, C) batch into the per-column reservoirs (see :meth:`ScalarReservoirQuantizer.fit`)."""
        self._check_columns(z)
        for column, quantizer in enumerate(self.quantizers):
            quantizer.fit(z[:, column], generator=generator)

    def finalize(self) -> None:
        """Places every column's codebook (see :meth:`ScalarReservoirQuantizer.finalize`)."""
        for quantizer in self.quantizers:
            quantizer.finalize()

    @torch.no_grad()
    def update(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Streams a (B, C) batch into the per-column reservoirs and refits their codebooks."""
        self._check_columns(z)
        for column, quantizer in enumerate(self.quantizers):
            quantizer.update(z[:, column], generator=generator)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.update(z)
        codes = self.encode(z)
        quantized = self.decode(codes)
        used = sum(torch.unique(c).numel() for c in codes.T) / (self.codebook_size * self.num_quantizers)
        return quantized, torch.nn.functional.mse_loss(quantized, z), torch.tensor(used)


class IdentityQuantizer(Quantizer):
    """Passes integer labels through unchanged; ``codebook_size`` is the number of labels.

    State dict: ``_codebook_size`` (scalar buffer), as in the reference.
    """

    def __init__(self, codebook_size: int):
        super().__init__()
        self.register_buffer("_codebook_size", torch.tensor(codebook_size))

    @property
    def codebook_size(self) -> int:
        return int(self._codebook_size.item())

    @property
    def codebook(self) -> torch.Tensor:
        return torch.arange(self.codebook_size)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        used = torch.unique(z).numel() / self.codebook_size
        return z, z.new_zeros(()), torch.tensor(used)


class ComposedScalarQuantizer(Quantizer):
    """Quantizes several named columns with their own quantizers into one shared index space.

    Column ``c`` uses indices ``[offset_c, offset_c + K_c)`` where offsets accumulate the codebook sizes in order.
    State dict: ``quantizers.<name>.*``.
    """

    def __init__(self, quantizers: OrderedDict[str, Quantizer]):
        super().__init__()
        self.quantizers = nn.ModuleDict(quantizers)
        offsets = [0]
        for quantizer in quantizers.values():
            offsets.append(offsets[-1] + quantizer.codebook_size)
        self.offsets = offsets[:-1]
        self._codebook_size = offsets[-1]

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    def encode(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """Dict of (N,) columns -> (N, C) int64 indices in the shared space."""
        columns = [q.encode(z[name]).long() + off for off, (name, q) in zip(self.offsets, self.quantizers.items())]
        return torch.stack(columns, dim=1)

    def decode(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, C) indices -> dict of (N,) columns; indices outside a column's range decode to -1."""
        out = {}
        for column, (offset, (name, quantizer)) in enumerate(zip(self.offsets, self.quantizers.items())):
            local = codes[:, column] - offset
            valid = (local >= 0) & (local < quantizer.codebook_size)
            values = quantizer.decode(torch.where(valid, local, 0))
            out[name] = torch.where(valid, values, torch.full_like(values, -1))
        return out

    def quantize(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([q.quantize(z[name]) for name, q in self.quantizers.items()], dim=1)

    def forward(self, z: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        quantized, losses, usage = zip(*(q(z[name]) for name, q in self.quantizers.items()))
        return torch.stack(quantized, dim=1), torch.stack(losses).float().mean(), torch.stack(usage).float().mean()
