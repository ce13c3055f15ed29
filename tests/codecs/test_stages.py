"""The public codec stages: shapes, ``encode``/``decode`` as their composition, gradients, network replacement."""

from __future__ import annotations

import pytest
import torch

from aion_fast import modalities as m
from aion_fast.codecs.catalog import CatalogCodec
from aion_fast.codecs.image import ImageCodec, PreprocessedImage
from aion_fast.codecs.scalar import GridScalarCodec
from aion_fast.codecs.scalar_field import ScalarFieldCodec
from aion_fast.codecs.spectrum import SpectrumCodec, SpectrumInput, SpectrumLatents, SpectrumOutput

#: A small image codec: 8 projection channels, 16 hidden, 3 FSQ channels of 5 levels (125 codes), 576 tokens.
TINY_IMAGE = {"quantizer_levels": [5, 5, 5], "embedding_dim": 3, "hidden_dims": 16, "multisurvey_projection_dims": 8,
              "num_consecutive": 1}  # fmt: skip
#: A small spectrum codec: 2 ConvNeXt stages on a 1088-point grid (3500-10457 Å at 6.4 Å), 136 LFQ tokens, mask head.
TINY_SPECTRUM = {"encoder_depths": [1, 1], "encoder_dims": [8, 16], "decoder_depths": [1, 1], "decoder_dims": [8, 2],
                 "latent_channels": 16, "embedding_dim": 10, "dim": 10, "resolution": 6.4,
                 "num_pixels": 1088}  # fmt: skip


@pytest.fixture(scope="module")
def image_codec() -> ImageCodec:
    torch.manual_seed(0)
    return ImageCodec(**TINY_IMAGE)


@pytest.fixture(scope="module")
def spectrum_codec() -> SpectrumCodec:
    torch.manual_seed(0)
    return SpectrumCodec(**TINY_SPECTRUM)


def _image(survey: str = "DES", batch: int = 2, side: int = 101) -> m.Image:
    g = torch.Generator().manual_seed(1)
    bands = [b for b in m.BAND_TO_INDEX if b.startswith(survey + "-")]
    flux = torch.randn(batch, len(bands), side, side, generator=g) * 0.3 + 0.05
    cls = m.LegacySurveyImage if survey == "DES" else m.HSCImage
    return cls(flux=flux, bands=bands)


def _spectrum(batch: int = 3, length: int = 700) -> m.DESISpectrum:
    g = torch.Generator().manual_seed(2)
    wavelength = (3600.0 + 8.0 * torch.arange(length, dtype=torch.float32)).expand(batch, -1).contiguous()
    flux = 2.0 + torch.sin(wavelength / 200.0) + 0.3 * torch.randn(batch, length, generator=g)
    ivar = torch.rand(batch, length, generator=g) + 0.5
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, 10:20] = True
    return m.DESISpectrum(flux=flux, ivar=ivar, mask=mask, wavelength=wavelength)


# ------------------------------------------------------------------------------------------------------- image


@pytest.mark.parametrize("survey", ["DES", "HSC"])
def test_image_stage_shapes_and_composition(image_codec, survey):
    codec, image = image_codec, _image(survey)
    with torch.inference_mode():
        inputs = codec.preprocess(image)
        assert isinstance(inputs, PreprocessedImage) and inputs.num_bands == len(image.bands)
        assert inputs.pixels.shape == (2, 96, 96, 9) and inputs.pixels.dtype == torch.float32
        absent = [c for c in range(9) if c not in [m.BAND_TO_INDEX[b] for b in image.bands]]
        assert not inputs.pixels[..., absent].any()
        assert codec.network_input(inputs).shape == (2, 8, 96, 96)
        latents = codec.encode_latents(inputs)
        assert latents.shape == (2, 3, 576)
        tokens = codec.quantize(latents)
        assert tokens.shape == (2, 576) and tokens.dtype == torch.int64
        codes = codec.dequantize(tokens)
        assert codes.shape == (2, 3, 576)
        outputs = codec.decode_latents(codes)
        assert outputs.shape == (2, 8, 96, 96)
        decoded = codec.postprocess(outputs, bands=image.bands)
    assert type(decoded) is type(image) and decoded.flux.shape == (2, len(image.bands), 96, 96)
    assert torch.equal(codec.encode(image), tokens)
    assert torch.equal(codec.decode(tokens, bands=image.bands).flux, decoded.flux)
    assert torch.equal(codec.encode_preprocessed(inputs.pixels, inputs.num_bands), tokens)


def test_image_gradients_flow_through_preprocess_and_encode_latents(image_codec):
    codec, image = image_codec, _image()
    flux = image.flux.clone().requires_grad_()
    codec.zero_grad()
    latents = codec.encode_latents(codec.preprocess(m.LegacySurveyImage(flux=flux, bands=image.bands)))
    latents.square().sum().backward()
    window = flux.grad[..., 2:98, 2:98]  # the central 96x96 of 101x101
    assert torch.isfinite(flux.grad).all() and window.abs().sum() > 0
    assert flux.grad.abs().sum() == window.abs().sum()  # pixels outside the crop do not matter
    for parameter in (codec.subsample_in.weight, codec.pre_quant_proj.weight, next(codec.model.parameters())):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    with torch.inference_mode():  # the differentiable path computes the inference path's latents
        assert torch.equal(latents.detach(), codec.encode_latents(codec.preprocess(image)))
    codec.zero_grad()


def test_image_decode_stages_are_differentiable(image_codec):
    codec = image_codec
    with torch.inference_mode():
        codes = codec.dequantize(codec.encode(_image()))
    codes = codes.clone().requires_grad_()
    codec.zero_grad()
    flux = codec.postprocess(codec.decode_latents(codes), bands=["DES-R", "DES-G"]).flux
    assert flux.shape == (2, 2, 96, 96)
    flux.sum().backward()
    used = [m.BAND_TO_INDEX["DES-R"], m.BAND_TO_INDEX["DES-G"]]
    unused = [c for c in range(9) if c not in used]
    weight_grad = codec.subsample_out.weight.grad
    assert codes.grad.abs().sum() > 0 and weight_grad[used].abs().sum() > 0 and not weight_grad[unused].any()
    codec.zero_grad()


def test_replaced_encoder_network_is_the_one_encode_runs(image_codec):
    codec, image = image_codec, _image()
    own, seen = codec.encoder_network(), []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return own(x)

    patched = codec.with_encoder_network(network)
    assert torch.equal(patched.encode(image), codec.encode(image))
    assert seen == [(2, 8, 96, 96)]
    assert codec.network() is not network and patched.network() is network
    assert list(patched.state_dict()) == list(codec.state_dict())
    assert codec.network_example(3).shape == (3, 8, 96, 96)


# ------------------------------------------------------------------------------------------------------- spectrum


def test_spectrum_stage_shapes_and_composition(spectrum_codec):
    codec, spectrum = spectrum_codec, _spectrum()
    with torch.inference_mode():
        inputs = codec.preprocess(spectrum)
        assert isinstance(inputs, SpectrumInput)
        assert inputs.grid.shape == (3, 2, 1088) and inputs.normalization.shape == (3,)
        latents = codec.encode_latents(inputs)
        assert isinstance(latents, SpectrumLatents) and latents.latents.shape == (3, 10, 136)
        tokens = codec.quantize(latents)
        assert tokens.shape == (3, 137) and tokens.dtype == torch.int64
        assert torch.equal(tokens[:, 0], inputs.normalization)
        codes = codec.dequantize(tokens)
        assert codes.latents.shape == (3, 10, 136) and torch.equal(codes.normalization, inputs.normalization)
        outputs = codec.decode_latents(codes)
        assert isinstance(outputs, SpectrumOutput) and outputs.values.shape == (3, 2, 1088)
        decoded = codec.postprocess(outputs, wavelength=spectrum.wavelength, modality=m.DESISpectrum)
    assert decoded.flux.shape == (3, 700) and decoded.mask.dtype == torch.bool
    assert torch.equal(codec.encode(spectrum), tokens)
    assert torch.equal(codec.encode_batches([spectrum, _spectrum(2, 500)])[0], tokens)
    again = codec.decode(tokens, wavelength=spectrum.wavelength)
    assert torch.equal(again.flux, decoded.flux) and torch.equal(again.mask, decoded.mask)


def test_spectrum_gradients_flow_through_preprocess_and_encode_latents(spectrum_codec):
    codec, spectrum = spectrum_codec, _spectrum()
    flux = spectrum.flux.clone().requires_grad_()
    codec.zero_grad()
    given = m.DESISpectrum(flux=flux, ivar=spectrum.ivar, mask=spectrum.mask, wavelength=spectrum.wavelength)
    latents = codec.encode_latents(codec.preprocess(given)).latents
    latents.square().sum().backward()
    assert torch.isfinite(flux.grad).all() and flux.grad.abs().sum() > 0
    for parameter in (codec.quant_conv.weight, next(codec.encoder.parameters())):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    with torch.inference_mode():  # the differentiable path computes the inference path's latents
        expected = codec.encode_latents(codec.preprocess(spectrum)).latents
    assert torch.equal(latents.detach(), expected)
    codec.zero_grad()


def test_spectrum_decode_rejects_bad_tokens_before_any_work(spectrum_codec):
    with pytest.raises(ValueError, match=r"\(batch, 137\)"):
        spectrum_codec.decode(torch.zeros(2, 136, dtype=torch.long))
    with pytest.raises(ValueError, match="Spectrum class"):
        spectrum_codec.decode(torch.zeros(2, 137, dtype=torch.long), modality=m.Z)


# ------------------------------------------------------------------------------------------------------- others


def test_scalar_stages_compose_to_encode_and_decode():
    codec = GridScalarCodec(m.Z.name, 64)
    z = m.Z(value=torch.tensor([0.0, 0.12, 0.5, 0.99]))
    with torch.inference_mode():
        values = codec.preprocess(z)
        tokens = codec.quantize(codec.encode_latents(values))
        decoded = codec.postprocess(codec.decode_latents(codec.dequantize(tokens)))
    assert values.shape == (4,) and tokens.shape == (4,)
    assert torch.equal(codec.encode(z), tokens) and torch.equal(codec.decode(tokens).value, decoded.value)
    assert (decoded.value - z.value).abs().max() <= 1 / 63


def test_catalog_stages_compose_to_encode_and_decode():
    codec = CatalogCodec()
    g = torch.Generator().manual_seed(3)
    columns = {"X": torch.randint(0, 96, (2, 4), generator=g), "Y": torch.randint(0, 96, (2, 4), generator=g)}
    columns |= {c: torch.rand(2, 4, generator=g) for c in ("SHAPE_E1", "SHAPE_E2", "SHAPE_R")}
    for column in columns.values():
        column[1, 2:] = 9999  # two empty slots
    catalog = m.LegacySurveyCatalog(**columns)
    with torch.inference_mode():
        tokens = codec.quantize(codec.encode_latents(codec.preprocess(catalog)))
        decoded = codec.postprocess(codec.decode_latents(codec.dequantize(tokens)))
    assert tokens.shape == (2, 20) and (tokens[1, 10:] == 9999).all()
    assert torch.equal(codec.encode(catalog), tokens)
    assert torch.equal(codec.decode(tokens).X, decoded.X) and torch.equal(decoded.X[0], columns["X"][0])
    bad = dict(columns, SHAPE_R=columns["SHAPE_R"].clone())
    bad["SHAPE_R"][0, 0] = 9999
    with pytest.raises(ValueError, match="SHAPE_R marks different empty slots"):
        codec.encode(m.LegacySurveyCatalog(**bad))


def test_scalar_field_stages_compose_to_encode_and_decode():
    torch.manual_seed(0)
    codec = ScalarFieldCodec(encoder_output_dim=4, res_hidden_dims=4, num_res_layers=1)
    field = m.LegacySurveySegmentationMap(field=torch.rand(2, 100, 100, generator=torch.Generator().manual_seed(4)))
    with torch.inference_mode():
        inputs = codec.preprocess(field)
        latents = codec.encode_latents(inputs)
        tokens = codec.quantize(latents)
        outputs = codec.decode_latents(codec.dequantize(tokens))
        decoded = codec.postprocess(outputs)
    assert inputs.shape == (2, 1, 96, 96) and latents.shape == (2, 4, 144) and tokens.shape == (2, 144)
    assert outputs.shape == (2, 1, 96, 96) and decoded.field.shape == (2, 96, 96)
    assert torch.equal(codec.encode(field), tokens) and torch.equal(codec.decode(tokens).field, decoded.field)
    assert codec.network_name is None
    with pytest.raises(ValueError, match="no exportable encoder network"):
        codec.with_encoder_network(torch.nn.Identity())
