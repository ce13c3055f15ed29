r"""The multi-survey image codec: Legacy Survey and HSC cut-outs <-> 576 FSQ tokens (AION-1 paper §4.1).

Encoding a batch of one survey's images (B, C, H, W):

1. ``preprocess``: the dispatched :func:`~aion_fast.ops.image_preprocess` (C++ on CPU; its PyTorch reference under
   autograd): central 96x96 crop, per-band clip, HSC zero-point rescale, arcsinh range compression and placement of
   the C bands in the fixed 9-band layout (``BAND_TO_INDEX``, absent bands 0), in one pass (float32, never touching
   the caller's tensor).
2. ``encode_latents``: :class:`SubsampledLinear` projects each pixel to 54 channels,
   :math:`\hat x = \sqrt{9 / C}\,(\tilde x W^\top + b)`, the factor keeping the feature norm independent of how
   many bands are present;
3. then :class:`ImageEncoderNetwork` (:class:`~aion_fast.codecs.nn.magvit.MagVitAE` encoder to (B, 512, 24, 24),
   1x1 convolution to the 5 FSQ channels), flattened to (B, 5, 576); ``quantize``: FSQ with levels [7, 5, 5, 5, 5]
   -> int64 tokens (B, 576).

Decoding inverts each step (FSQ codes, 1x1 convolution, MagViT decoder, then :func:`~aion_fast.ops.image_postprocess`:
54 -> 9 projection, sinh, HSC rescale and band selection in one dispatched pass) and returns the requested bands of
one survey as a :class:`~aion_fast.modalities.LegacySurveyImage` or :class:`~aion_fast.modalities.HSCImage`.

Checkpoints: same constructor arguments (``codecs/image/config.json``) and state-dict keys as the reference
``aion.codecs.ImageCodec``, so checkpoints load both ways. Tokens equal the reference's bit for bit; the
preprocessing and projection are re-ordered only where that cannot change a float32 rounding.

Speed: bit-identical tokens pin every convolution to the reference's oneDNN call and memory layout, and those
convolutions take most of the CPU time (bench/RESULTS.md), so the exact path gains only around them: no autograd
graph (the reference's ``encode`` records one; lower peak memory), in-place elementwise steps and a single
preprocessing pass; ``precision="fast"`` is the path that speeds the convolutions up. Restricting the 9 -> 54
projection to the present bands with the norm factor folded into the weights changes float32 roundings, so it is
not done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from aion_fast.codecs.base import Codec
from aion_fast.codecs.nn.magvit import MagVitAE
from aion_fast.codecs.preprocessing import (
    CROP_SIZE,
    band_indices,
    survey_bands,
    zeropoint_scale,
)
from aion_fast.modalities import BAND_CLAMP_MAX, BAND_TO_INDEX, HSCImage, Image, LegacySurveyImage
from aion_fast.ops.image_postprocess import image_postprocess, torch_image_postprocess
from aion_fast.ops.image_preprocess import image_preprocess, torch_image_preprocess
from aion_fast.quantizers import FiniteScalarQuantizer
from aion_fast.tensor_utils import as_normal_tensor

__all__ = ["ImageCodec", "ImageEncoderNetwork", "NUM_BANDS", "PreprocessedImage", "SubsampledLinear"]

#: Channels of the fixed multi-survey layout (5 HSC + 4 Legacy Survey bands).
NUM_BANDS = max(BAND_TO_INDEX.values()) + 1

_IMAGE_CLASS_OF_SURVEY: dict[str, type[Image]] = {"DES": LegacySurveyImage, "HSC": HSCImage}


class PreprocessedImage(NamedTuple):
    """The image codec's network input (:meth:`ImageCodec.preprocess`)."""

    #: (B, 96, 96, 9) float32, channels last, the bands placed in the 9-band layout (absent bands 0).
    pixels: Tensor
    #: Number C of bands present (4 Legacy Survey, 5 HSC): the projection's norm factor depends on it.
    num_bands: int


class ImageEncoderNetwork(nn.Module):
    """The image codec between its band projection and FSQ: (B, 54, 96, 96) -> (B, 5, 24, 24) latents.

    The exportable part of :meth:`ImageCodec.encode_latents` (MagViT encoder + 1x1 convolution); its modules are the
    codec's own (shared, not copied).
    """

    def __init__(self, codec: ImageCodec):
        super().__init__()
        self.autoencoder = codec.model
        self.pre_quant_proj = codec.pre_quant_proj

    def forward(self, projected: Tensor) -> Tensor:
        return self.pre_quant_proj(self.autoencoder.encode(projected))


class SubsampledLinear(nn.Module):
    r"""Per-pixel linear map between the 9-band layout and the projection space, for a subset of bands.

    Parameters ``weight`` (dim_out, dim_in) and ``bias`` (dim_out,), initialised like ``nn.Linear``.
    :meth:`embed` (9 -> 54, used with ``dim_in = 9``) zero-pads the present bands into the 9-band layout, projects
    and rescales by :math:`\sqrt{d_{in} / C}`; :meth:`unembed` (54 -> 9, ``dim_out = 9``) returns the requested
    bands.

    Args:
        dim_in: input channels.
        dim_out: output channels.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.dim_in, self.dim_out = dim_in, dim_out
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in))
        self.bias = nn.Parameter(torch.empty(dim_out))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(dim_in)
        nn.init.uniform_(self.bias, -bound, bound)

    def embed(self, x: Tensor, channels: Sequence[int]) -> Tensor:
        r"""Projects C present bands into the ``dim_out``-channel space.

        .. math:: y = \sqrt{d_{in} / C}\, \bigl(\mathrm{pad}(x) W^\top + b\bigr)

        where :math:`\mathrm{pad}` puts band ``i`` at channel ``channels[i]`` of a zero ``dim_in``-vector. The
        zero-padded product is kept (rather than a product with the C used columns of W) because it reproduces
        the reference's float32 sums exactly.

        Args:
            x: (B, C, H, W) float32.
            channels: C distinct positions in ``[0, dim_in)``.

        Returns:
            (B, dim_out, H, W), a channels-last view (the layout the first convolution must see).
        """
        b, c, height, width = x.shape
        padded = x.new_zeros(b, height, width, self.dim_in)
        padded[..., list(channels)] = x.permute(0, 2, 3, 1)
        return self.embed_padded(padded, len(channels))

    def embed_padded(self, padded: Tensor, num_present: int) -> Tensor:
        r"""Projects inputs already placed in the ``dim_in`` layout (what :func:`aion_fast.ops.image_preprocess`
        returns): :math:`y = \sqrt{d_{in} / C}\, (x W^\top + b)` with ``C = num_present``.

        Args:
            padded: (B, H, W, dim_in) float32, channels last, absent channels 0.
            num_present: number of bands present, C.

        Returns:
            (B, dim_out, H, W), a channels-last view.
        """
        # float32 sqrt(d_in / C) evaluated on the CPU (no per-batch host-device copy); exact in a float32 multiply
        scale = float((torch.tensor(float(self.dim_in), dtype=torch.float32) / num_present) ** 0.5)
        out = torch.matmul(padded, self.weight.t()).add_(self.bias).mul_(scale)
        return out.permute(0, 3, 1, 2)

    def unembed(self, h: Tensor, channels: Sequence[int]) -> Tensor:
        """Projects back to the 9-band layout and keeps the requested channels.

        Args:
            h: (B, dim_in, H, W).
            channels: positions in ``[0, dim_out)`` to return, in order.

        Returns:
            (B, H, W, C) contiguous, channels last.
        """
        out = torch.matmul(h.permute(0, 2, 3, 1), self.weight.t()).add_(self.bias)
        return out[..., list(channels)]


class ImageCodec(Codec):
    r"""MagViT autoencoder + FSQ tokenizer for Legacy Survey and HSC images (one codec for both surveys).

    Args:
        quantizer_levels: FSQ levels per latent channel; the released codec uses ``[7, 5, 5, 5, 5]`` (4375 codes).
        hidden_dims: channels of the 24x24 latent grid (512 released).
        multisurvey_projection_dims: width of the per-pixel band projection (54).
        n_compressions: 2x downsamplings; the token grid is ``96 / 2**n_compressions`` wide (24 -> 576 tokens).
        num_consecutive: residual units per resolution.
        embedding_dim: latent channels fed to FSQ; must equal ``len(quantizer_levels)``.
        range_compression_factor: :math:`\alpha` of the arcsinh range compression.
        mult_factor: :math:`\kappa`, multiplier after range compression.

    The codec is built in eval mode (call ``.train()`` to fine-tune); ``encode``/``decode`` run under
    ``torch.inference_mode``.
    """

    network_name = "image"

    def __init__(
        self,
        quantizer_levels: Sequence[int],
        hidden_dims: int = 512,
        multisurvey_projection_dims: int = 54,
        n_compressions: int = 2,
        num_consecutive: int = 4,
        embedding_dim: int = 5,
        range_compression_factor: float = 0.01,
        mult_factor: float = 10.0,
    ):
        super().__init__()
        levels = [int(level) for level in quantizer_levels]
        if len(levels) != embedding_dim:
            raise ValueError(
                f"ImageCodec: embedding_dim ({embedding_dim}) must equal the number of quantizer_levels "
                f"({levels}); FSQ quantizes one latent channel per level."
            )
        if CROP_SIZE % 2**n_compressions:
            raise ValueError(f"ImageCodec: n_compressions={n_compressions} does not divide the {CROP_SIZE}-pixel crop.")
        self._quantizer = FiniteScalarQuantizer(levels)
        self.model = MagVitAE(
            n_bands=multisurvey_projection_dims,
            hidden_dims=hidden_dims,
            n_compressions=n_compressions,
            num_consecutive=num_consecutive,
        )
        self.subsample_in = SubsampledLinear(NUM_BANDS, multisurvey_projection_dims)
        self.subsample_out = SubsampledLinear(multisurvey_projection_dims, NUM_BANDS)
        self.pre_quant_proj = nn.Conv2d(hidden_dims, embedding_dim, 1)
        self.post_quant_proj = nn.Conv2d(embedding_dim, hidden_dims, 1)
        self.range_compression_factor = range_compression_factor
        self.mult_factor = mult_factor
        self.grid_size = CROP_SIZE // 2**n_compressions
        self.eval()

    @property
    def modality(self) -> type[Image]:
        return Image

    @property
    def quantizer(self) -> FiniteScalarQuantizer:
        return self._quantizer

    @property
    def num_tokens(self) -> int:
        """Tokens per image (576 for the released codec)."""
        return self.grid_size**2

    # ------------------------------------------------------------------ stages

    def preprocess(self, x: Image) -> PreprocessedImage:
        """Validates and preprocesses one survey's images (B, C, H, W): crop, clip, rescale, arcsinh, 9-band layout.

        The dispatched op (:func:`~aion_fast.ops.image_preprocess`: C++, Triton or PyTorch) runs; when ``x.flux``
        requires grad under autograd, its PyTorch reference does, so gradients reach the flux.

        Returns:
            :class:`PreprocessedImage`: (B, 96, 96, 9) float32 channels-last pixels on the codec's device, and C.
        """
        self.check_input(x)
        what = f"{type(x).__name__}.flux"
        args = (
            band_indices(x.bands),
            [BAND_CLAMP_MAX[band] for band in x.bands],
            zeropoint_scale(x.bands[0].split("-")[0]),
            self.range_compression_factor,
            self.mult_factor,
        )
        if torch.is_grad_enabled() and x.flux.requires_grad:
            pixels = torch_image_preprocess(
                x.flux.to(self.device), *args, crop_size=CROP_SIZE, num_bands=NUM_BANDS, what=what
            )
        else:
            pixels = image_preprocess(
                x.flux, *args, crop_size=CROP_SIZE, num_bands=NUM_BANDS, device=self.device, what=what
            )
        return PreprocessedImage(pixels, len(x.bands))

    def network_input(self, inputs: PreprocessedImage) -> Tensor:
        """(B, 96, 96, 9) preprocessed pixels -> (B, 54, 96, 96) band projection (a channels-last view)."""
        return self.subsample_in.embed_padded(inputs.pixels, inputs.num_bands)

    def encoder_network(self) -> ImageEncoderNetwork:
        return ImageEncoderNetwork(self)

    def network_example(self, batch: int = 2) -> Tensor:
        return torch.randn(batch, self.subsample_in.dim_out, CROP_SIZE, CROP_SIZE)

    def encode_latents(self, inputs: PreprocessedImage) -> Tensor:
        """:class:`PreprocessedImage` -> (B, embedding_dim, num_tokens) latents (projection, MagViT, 1x1 conv)."""
        return self.network()(self.network_input(inputs)).flatten(2)

    def dequantize(self, tokens: Tensor) -> Tensor:
        """(B, num_tokens) tokens -> (B, embedding_dim, num_tokens) FSQ codes."""
        return self.quantizer.decode(tokens)

    def decode_latents(self, latents: Tensor) -> Tensor:
        """(B, embedding_dim, num_tokens) latents -> (B, 54, 96, 96) decoder output (1x1 conv, MagViT decoder)."""
        b, d, _ = latents.shape
        side = self.grid_size
        # channels-last latents: the layout (and hence oneDNN kernel and rounding) of the reference
        z = latents.reshape(b, d, side, side).contiguous(memory_format=torch.channels_last)
        return self.model.decode(self.post_quant_proj(z))

    def postprocess(
        self, outputs: Tensor, bands: Sequence[str] | None = None, modality: type[Image] | None = None
    ) -> LegacySurveyImage | HSCImage:
        """(B, 54, 96, 96) decoder output -> images of the requested bands (see :meth:`decode` for the arguments).

        The dispatched op (:func:`~aion_fast.ops.image_postprocess`) runs; under autograd, when the output or the
        projection requires grad, its PyTorch reference does (in float32, outside autocast).
        """
        image_class, bands = self._decode_target(bands, modality)
        args = (band_indices(bands), zeropoint_scale(bands[0].split("-")[0]), self.range_compression_factor)
        weight, bias = self.subsample_out.weight, self.subsample_out.bias
        if torch.is_grad_enabled() and (outputs.requires_grad or weight.requires_grad):
            with torch.autocast(outputs.device.type, enabled=False):
                flux = torch_image_postprocess(outputs.float(), weight.float(), bias.float(), *args, self.mult_factor)
        else:
            flux = image_postprocess(outputs, weight, bias, *args, self.mult_factor)
        return image_class(flux=flux, bands=bands)

    # ------------------------------------------------------------------ encode

    def encode_preprocessed(self, padded: Tensor, num_bands: int) -> Tensor:
        """Tokens of images already preprocessed as :func:`aion_fast.ops.image_preprocess` does (e.g. by DALI).

        Args:
            padded: (B, 96, 96, 9) float32, channels last, absent bands 0.
            num_bands: bands present, C (4 for the Legacy Survey, 5 for HSC).

        Returns:
            (B, 576) int64 tokens, equal to :meth:`encode` of the images the inputs were preprocessed from.
        """
        with torch.inference_mode():
            inputs = PreprocessedImage(padded.to(self.device, torch.float32), num_bands)
            tokens = self.quantize(self.encode_latents(inputs))
        return as_normal_tensor(tokens)

    def encode_batches(
        self, batches: Sequence[Image], preprocessed: Sequence[tuple[Tensor, tuple[float, float]] | None] | None = None
    ) -> list[Tensor]:
        """Tokens of several image batches; a batch whose ``preprocessed`` entry is given enters after preprocessing.

        Args:
            batches: image batches (each its own survey's bands).
            preprocessed: per batch None, or ``(padded, (range_compression_factor, mult_factor))``: the (B, 96, 96, 9)
                codec input made elsewhere (the DALI loader) and the arcsinh factors it was made with. It is used only
                when those equal this codec's (else the batch is preprocessed here), so tokens equal :meth:`encode`.
        """
        preprocessed = preprocessed or [None] * len(batches)
        factors = (float(self.range_compression_factor), float(self.mult_factor))
        return [
            self.encode_preprocessed(ready[0], len(batch.bands)) if ready is not None and ready[1] == factors
            else self.encode(batch)
            for batch, ready in zip(batches, preprocessed)
        ]  # fmt: skip

    # ------------------------------------------------------------------ decode

    @staticmethod
    def _decode_target(bands: Sequence[str] | None, modality: type[Image] | None) -> tuple[type[Image], list[str]]:
        """Resolves which image class and bands ``decode`` returns, before any computation."""
        if modality is not None and not (isinstance(modality, type) and issubclass(modality, Image)):
            raise ValueError(
                f"ImageCodec.decode: modality must be an image class (LegacySurveyImage or HSCImage), got {modality!r}."
            )
        prefix = modality.survey_prefix if modality is not None else None
        if bands is None:
            if prefix is None:
                raise ValueError(
                    "ImageCodec.decode needs `bands` (e.g. ['DES-G', 'DES-R', 'DES-I', 'DES-Z']) or `modality` "
                    "(LegacySurveyImage or HSCImage, whose bands are then all reconstructed): an image holds the "
                    "bands of one survey."
                )
            bands = survey_bands(prefix)
        bands = list(bands)
        if not bands:
            raise ValueError("ImageCodec.decode: bands is empty; name at least one band, e.g. ['DES-R'].")
        Image(flux=torch.zeros(1, len(bands), 1, 1), bands=bands)  # band checks with the modality's messages
        survey = bands[0].split("-")[0]
        if prefix is not None and prefix != survey:
            raise ValueError(
                f"ImageCodec.decode: bands {bands} are {survey} bands but modality={modality.__name__} holds "
                f"{prefix}-* bands; pass bands of that survey or the matching modality."
            )
        return _IMAGE_CLASS_OF_SURVEY[survey], bands

    def decode(
        self, z: Tensor, bands: Sequence[str] | None = None, modality: type[Image] | None = None
    ) -> LegacySurveyImage | HSCImage:
        """Reconstructs images of one survey from tokens.

        Args:
            z: (B, num_tokens) integer tokens.
            bands: bands to reconstruct, all of one survey, in the order wanted. Default: every band of
                ``modality``'s survey (``DES-G/R/I/Z`` or ``HSC-G/R/I/Z/Y``).
            modality: ``LegacySurveyImage`` or ``HSCImage`` (what ``CodecManager.decode`` passes); needed when
                ``bands`` is not given. The reference returned all 9 bands as one image, which a validated image
                of one survey cannot hold.

        Returns:
            ``LegacySurveyImage`` (DES bands) or ``HSCImage`` (HSC bands) with float32 flux (B, C, 96, 96) in the
            survey's native units (HSC fluxes multiplied back by the zero-point scale).

        Raises:
            ValueError: neither bands nor modality, unknown or mixed-survey bands, a band/modality mismatch, or
                tokens that are not (B, num_tokens) integers in range.
        """
        image_class, bands = self._decode_target(bands, modality)
        return super().decode(z, bands=bands, modality=image_class)

    def check_tokens(self, z: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.num_tokens:
            raise ValueError(
                f"ImageCodec.decode expects tokens of shape (batch, {self.num_tokens}), got {tuple(z.shape)}."
            )
