"""The reservoir quantizers' public fit: ``fit`` streams, ``finalize`` places the codebook, equal to the streaming
``update`` path (long streams) and to the values' own quantiles (streams shorter than the reservoir)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aion_fast.quantizers import (
    MultiScalarCompressedReservoirQuantizer,
    ScalarLogReservoirQuantizer,
    ScalarReservoirQuantizer,
)


def _fluxes(n: int, seed: int = 0) -> torch.Tensor:
    """Log-normal fluxes (nanomaggies) with some below the log floor exp(-3)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.exp(rng.normal(0.5, 1.8, n)).astype(np.float32))


def _codebook_of_filled_reservoir(values: np.ndarray, reservoir_size: int, codebook_size: int) -> torch.Tensor:
    """By hand: the reservoir filled with the values' evenly spaced quantiles (float64, stored float32), then the
    codebook at evenly spaced quantiles of the sorted reservoir by linear interpolation (float32 quantile levels)."""
    reservoir = np.quantile(values.astype(np.float64), np.linspace(0.0, 1.0, reservoir_size)).astype(np.float32)
    levels = torch.linspace(0, 1, reservoir_size).numpy().astype(np.float64)
    codes = torch.linspace(0, 1, codebook_size).numpy().astype(np.float64)
    return torch.from_numpy(np.interp(codes, levels, np.sort(reservoir)).astype(np.float32))


@pytest.mark.parametrize("cls", [ScalarReservoirQuantizer, ScalarLogReservoirQuantizer])
def test_fit_then_finalize_equals_streaming_updates(cls):
    values = _fluxes(6000)
    streamed, fitted = cls(256, 1500), cls(256, 1500)
    generators = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    default = fitted.codebook.clone()
    for chunk in values.split(700):
        streamed.update(chunk, generator=generators[0])
        fitted.fit(chunk, generator=generators[1])
    assert torch.equal(fitted.codebook, default)  # fit alone leaves the codebook for finalize
    fitted.finalize()
    assert fitted.num_samples == streamed.num_samples == 6000
    for (name, a), (_, b) in zip(streamed.state_dict().items(), fitted.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(fitted.encode(values), streamed.encode(values))


def test_finalize_of_a_short_stream_uses_the_values_quantiles():
    """120 values, 500 slots: the codebook is that of a reservoir holding the values' quantiles (the fit codec
    training did through the quantizer's private state before), not one pulled toward reservoir_default."""
    values = _fluxes(120, seed=1)
    log = ScalarLogReservoirQuantizer(32, 500)
    for chunk in values.split(50):
        log.fit(chunk)
    log.finalize()
    transformed = log.transform(values).numpy()  # log(max(flux, e^-3)) as the quantizer computes it
    assert torch.equal(log.codebook, _codebook_of_filled_reservoir(transformed, 500, 32))
    assert log.codebook[0] == pytest.approx(float(transformed.min()), abs=1e-6)
    assert log.codebook[-1] == pytest.approx(float(transformed.max()), abs=1e-6)
    # The reference's streaming update keeps the default slots: the lowest codes all sit on reservoir_default.
    streamed = ScalarLogReservoirQuantizer(32, 500)
    streamed.update(values)
    assert int((streamed.codebook == -3.0).sum()) > 10 and int((log.codebook == -3.0).sum()) <= 1


def test_multi_column_fit_finalizes_every_column():
    rng = np.random.default_rng(2)
    coefficients = torch.from_numpy((rng.normal(size=(90, 4)) * [1.0, 10.0, 100.0, 0.1]).astype(np.float32))
    multi = MultiScalarCompressedReservoirQuantizer(["arcsinh"], ["sinh"], 16, 200, num_quantizers=4)
    multi.fit(coefficients[:40])
    multi.fit(coefficients[40:])
    multi.finalize()
    assert multi.num_samples == 90
    for column, quantizer in enumerate(multi.quantizers):
        transformed = quantizer.transform(coefficients[:, column]).numpy()  # arcsinh
        expected = _codebook_of_filled_reservoir(transformed, 200, 16)
        assert torch.equal(quantizer.codebook, expected), column
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        multi.fit(coefficients[:, :3])
    with pytest.raises(ValueError, match="NaN/inf"):
        ScalarReservoirQuantizer(8, 10).fit(torch.tensor([1.0, float("nan")]))
