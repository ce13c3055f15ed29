"""Modality dataclasses: the reference's names and attributes, and a clear ValueError for every malformed input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import modalities as ref

from aion_fast import modalities as m


def test_same_classes_fields_and_keys_as_reference():
    assert set(ref.__all__) <= set(m.__all__)
    for name in ref.__all__:
        ours, theirs = getattr(m, name), getattr(ref, name)
        assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(theirs)], name
        for attribute in ("token_key", "name"):
            assert getattr(ours, attribute) == getattr(theirs, attribute), (name, attribute)
        if hasattr(theirs, "num_tokens"):
            assert ours.num_tokens == theirs.num_tokens, name
    assert set(m.ScalarModalities) == set(ref.ScalarModalities)


def _spectrum(**overrides):
    fields = {
        "flux": torch.rand(2, 50),
        "ivar": torch.ones(2, 50),
        "mask": torch.zeros(2, 50, dtype=torch.bool),
        "wavelength": torch.linspace(4000, 5000, 50).repeat(2, 1),
    }
    return {**fields, **overrides}


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: m.LegacySurveyImage(flux=torch.rand(2, 4, 96, 96), bands=["DES-G", "DES-R", "DES-I", "DES-Y"]),
         "unknown band"),
        (lambda: m.LegacySurveyImage(flux=torch.rand(2, 3, 96, 96), bands=["DES-G", "DES-R", "DES-I", "DES-Z"]),
         "3 channels but bands lists 4"),
        (lambda: m.HSCImage(flux=torch.rand(1, 1, 96, 96), bands=["DES-G"]), "HSC-\\* bands"),
        (lambda: m.LegacySurveyImage(flux=torch.rand(4, 96, 96), bands=["DES-G"] * 4), "batch, bands, height, width"),
        (lambda: m.LegacySurveyImage(flux=torch.zeros(0, 1, 96, 96), bands=["DES-G"]), "empty batch"),
        (lambda: m.LegacySurveyImage(flux=torch.ones(1, 1, 96, 96, dtype=torch.int32), bands=["DES-G"]),
         "floating dtype"),
        (lambda: m.LegacySurveyImage(flux=torch.rand(1, 2, 96, 96), bands=["DES-G", "DES-G"]), "twice"),
        (lambda: m.DESISpectrum(**_spectrum(ivar=torch.ones(2, 49))), "ivar has shape"),
        (lambda: m.DESISpectrum(**_spectrum(mask=torch.zeros(2, 50))), "bool tensor"),
        (lambda: m.DESISpectrum(**_spectrum(wavelength=torch.linspace(5000, 4000, 50).repeat(2, 1))),
         "strictly increasing"),
        (lambda: m.DESISpectrum(**_spectrum(flux=torch.rand(50))), "batch, pixels"),
        (lambda: m.DESISpectrum(**_spectrum(flux=torch.ones(2, 50, dtype=torch.int64))), "floating dtype"),
        (lambda: m.Z(value=[0.1, 0.2]), "torch.Tensor"),
        (lambda: m.LegacySurveyCatalog(X=torch.zeros(2, 3), Y=torch.zeros(2, 3), SHAPE_E1=torch.zeros(2, 3),
                                       SHAPE_E2=torch.zeros(2, 3), SHAPE_R=torch.zeros(2, 2)), "SHAPE_R has shape"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_value_error_naming_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_sdss_padding_is_refused_with_advice():
    wavelength = torch.linspace(3800, 9000, 50).repeat(2, 1)
    wavelength[1, -5:] = -1.0  # SDSS rows padded with lambda = -1 in the MMU files
    with pytest.raises(ValueError, match=r"rows \[1\].*padding"):
        m.SDSSSpectrum(**_spectrum(wavelength=wavelength))


def test_numpy_inputs_are_wrapped_without_copy():
    flux = np.random.rand(2, 4, 96, 96).astype(np.float32)
    image = m.LegacySurveyImage(flux=flux, bands=["DES-G", "DES-R", "DES-I", "DES-Z"])
    assert isinstance(image.flux, torch.Tensor)
    assert image.flux.data_ptr() == flux.ctypes.data
    assert image.batch_size == 2 and image.survey == "DES"
