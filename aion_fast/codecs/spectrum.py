r"""The spectrum codec: DESI and SDSS spectra <-> 273 tokens (AION-1 paper §4.2).

Encoding a batch of B spectra with L pixels (flux :math:`f`, inverse variance :math:`v`, bad-pixel mask :math:`m`,
wavelengths :math:`\lambda`), in float32:

1. Cleaning: NaN/inf at masked pixels become finite (``nan_to_num``: NaN -> 0, +-inf -> +-float32 max); the flux
   is optionally clipped to ``[-clip_flux, clip_flux]``, the inverse variance to ``[0, clip_ivar]``;
   :math:`s = \sqrt{v}` is the inverse standard deviation.
2. Normalisation token: :math:`\bar f = \max\bigl(0.1,\ \sum_{m_i = 0} f_i / (1 + \#\{m_i = 0\})\bigr)`, compressed
   to :math:`\nu = \log_{10}(1 + \bar f)` and binned by a linear quantizer of ``codebook_size`` values on
   ``normalization_range``; its index is token 0 and its bin value :math:`\hat\nu` is used from here on.
3. With :math:`n = \max(10^{\hat\nu} - 1,\ 0.1)`: :math:`\tilde f = a\,(f / n - 1)`,
   :math:`\tilde s = a\, s / n` (:math:`a` = ``input_scaling``).
4. Both channels are linearly interpolated onto the latent grid :math:`3500 + 0.8\,k` Å, :math:`k < 8704`
   (zero outside each spectrum's range; :mod:`aion_fast.codecs.spectral_grid`), range-compressed with ``arcsinh``
   and stacked as a (B, 2, 8704) input. Steps 3-4 (and the cleaning of step 1) run as one dispatched op,
   :func:`aion_fast.ops.spectrum_to_latent` (one C++ merge pass per row on CPU).
5. ConvNeXt-V2 encoder (:mod:`aion_fast.codecs.nn.convnext`) to (B, C, 272), LayerNorm over C, a 1x1 convolution
   to ``embedding_dim`` = 10 channels, and lookup-free quantization (sign bits, 1024 codes): tokens 1..272.

As stages: steps 1-4 are ``preprocess`` (-> :class:`SpectrumInput`), step 5 ``encode_latents`` (network) and
``quantize`` (LFQ, normalisation token first). Decoding inverts this: LFQ codes -> 1x1 convolution -> ConvNeXt
decoder -> flux (and mask logits when the decoder has two output channels) on the latent grid, optionally
interpolated onto requested wavelengths, then
:math:`f = (\hat f + 1)\, n`; the mask is ``round(sigmoid(logit))``. These last steps run as one dispatched op,
:func:`aion_fast.ops.spectrum_to_observed` (bit-identical to the PyTorch code). Inverse variances are not modelled
(ones).

Exactness: every float32 operation that decides a token is evaluated in the reference's order, so tokens equal the
reference's exactly (tested on real DESI spectra and synthetic SDSS-like ones; the pre-quantization latents are
bit-identical). Speed: the networks run without autograd (``inference_mode``) with in-place intermediates and reused
buffers (:mod:`aion_fast.codecs.nn.convnext`), the two channels share one interpolation search, and the reference's
second pass through the normalisation quantizer is skipped (its result is the first pass's index, because the bin
values are distinct). The encoder's matrix products dominate and already run near the CPU's FP32 peak in both
implementations, so on a 2-core CPU the encode is only ~1.04x the reference under ``no_grad`` (~1.15x the reference as
usually called, with autograd on).

Input policy (the reference silently propagates garbage in these cases; here they raise ``ValueError``):
non-finite flux or ivar at pixels NOT flagged in ``mask`` (flag them), rows with every pixel masked, and rows whose
wavelength range contains no latent grid point. Inputs are never modified; float64 inputs are computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from aion_fast.codecs.base import Codec
from aion_fast.codecs.nn.convnext import ConvNeXtDecoder1d, ConvNeXtEncoder1d
from aion_fast.codecs.spectral_grid import LatentSpectralGrid, rows_without_overlap
from aion_fast.modalities import DESISpectrum, Spectrum
from aion_fast.ops.spectrum_to_latent import spectrum_to_latent, torch_spectrum_to_latent
from aion_fast.ops.spectrum_to_observed import spectrum_to_observed, torch_spectrum_to_observed
from aion_fast.quantizers import LookupFreeQuantizer, Quantizer, ScalarLinearQuantizer
from aion_fast.tensor_utils import as_normal_tensor

__all__ = ["SpectrumCodec", "SpectrumEncoderNetwork", "SpectrumInput", "SpectrumLatents", "SpectrumOutput"]


def _rows(flags: Tensor, limit: int = 10) -> str:
    """Indices of the True entries of a (B,) bool tensor, for error messages."""
    rows = torch.nonzero(flags).flatten().tolist()
    return f"{rows[:limit]}{' ...' if len(rows) > limit else ''}"


def _check_spectrum_class(modality: object) -> None:
    if not (isinstance(modality, type) and issubclass(modality, Spectrum)):
        raise ValueError(f"modality must be a Spectrum class such as DESISpectrum, got {modality!r}.")


class SpectrumInput(NamedTuple):
    """The spectrum codec's network input (:meth:`SpectrumCodec.preprocess`)."""

    #: (B, 2, G) float32: arcsinh of the normalised flux and inverse sigma on the latent grid.
    grid: Tensor
    #: (B,) int64 normalisation tokens (token 0; their bin value set the flux scale).
    normalization: Tensor


class SpectrumLatents(NamedTuple):
    """Continuous (or dequantized) latents of the spectrum codec with the normalisation token they belong to."""

    #: (B, embedding_dim, T) latents (T = G / 32).
    latents: Tensor
    #: (B,) int64 normalisation tokens.
    normalization: Tensor


class SpectrumOutput(NamedTuple):
    """The spectrum decoder's output (:meth:`SpectrumCodec.decode_latents`)."""

    #: (B, K, G) float32 on the latent grid: normalised flux, and mask logits when K = 2.
    values: Tensor
    #: (B,) int64 normalisation tokens, or None for normalised flux.
    normalization: Tensor | None


class SpectrumEncoderNetwork(nn.Module):
    """The spectrum codec between its resampled input and LFQ: (B, 2, G) -> (B, E, G / 32) latents.

    The exportable part of :meth:`SpectrumCodec.encode_latents` (ConvNeXt encoder, LayerNorm over channels, 1x1
    convolution); its modules are the codec's own (shared, not copied).
    """

    def __init__(self, codec: SpectrumCodec):
        super().__init__()
        self.encoder = codec.encoder
        self.pre_quant_norm = codec.pre_quant_norm
        self.quant_conv = codec.quant_conv

    def forward(self, grid_input: Tensor) -> Tensor:
        h = self.encoder(grid_input)
        h = self.pre_quant_norm(h.movedim(1, -1)).movedim(-1, 1)
        return self.quant_conv(h)


def _config_problems(
    encoder_depths: Sequence[int],
    encoder_dims: Sequence[int],
    decoder_depths: Sequence[int],
    decoder_dims: Sequence[int],
    resolution: float,
    num_pixels: int,
    latent_channels: int,
    embedding_dim: int,
    clip_ivar: float | None,
    clip_flux: float | None,
    input_scaling: float,
    normalization_range: Sequence[float],
    codebook_size: int,
    dim: int,
) -> list[str]:
    """Every inconsistency of a SpectrumCodec configuration, each with the value to change."""
    problems = []
    if len(encoder_depths) != len(encoder_dims) or len(encoder_dims) < 2:
        problems.append(
            f"encoder_depths {tuple(encoder_depths)} and encoder_dims {tuple(encoder_dims)} must have the same "
            f"length (>= 2 stages)"
        )
    if len(decoder_depths) != len(decoder_dims) or len(decoder_dims) < 2:
        problems.append(
            f"decoder_depths {tuple(decoder_depths)} and decoder_dims {tuple(decoder_dims)} must have the same "
            f"length (>= 2 stages)"
        )
    if len(encoder_dims) != len(decoder_dims):
        problems.append(
            f"encoder ({len(encoder_dims)} stages) and decoder ({len(decoder_dims)} stages) must have as many "
            f"stages, so that the decoder restores the {num_pixels}-pixel grid"
        )
    if encoder_dims and latent_channels != encoder_dims[-1]:
        problems.append(
            f"latent_channels={latent_channels} must equal encoder_dims[-1]={encoder_dims[-1]}: pass "
            f"latent_channels={encoder_dims[-1]}"
        )
    if embedding_dim != dim:
        problems.append(
            f"embedding_dim={embedding_dim} (channels fed to the LFQ) must equal the LFQ dim={dim}: pass "
            f"embedding_dim={dim} (AION-1 checkpoints use embedding_dim=10, dim=10, codebook_size=1024)"
        )
    if codebook_size < 2 or codebook_size & (codebook_size - 1):
        problems.append(f"codebook_size={codebook_size} must be a power of two >= 2 (AION-1: 1024)")
    if decoder_dims and decoder_dims[-1] not in (1, 2):
        problems.append(f"decoder_dims[-1]={decoder_dims[-1]} must be 1 (flux) or 2 (flux and mask)")
    factor = 4 * 2 ** (len(encoder_dims) - 1)
    if num_pixels <= 0 or num_pixels % factor:
        problems.append(
            f"num_pixels={num_pixels} must be a positive multiple of {factor} (the encoder's down-sampling for "
            f"{len(encoder_dims)} stages), e.g. 8704"
        )
    if not resolution > 0:
        problems.append(f"resolution={resolution} must be > 0 (Angstrom per latent pixel)")
    if clip_ivar is not None and not clip_ivar > 0:
        problems.append(f"clip_ivar={clip_ivar} must be > 0 or None")
    if clip_flux is not None and not clip_flux > 0:
        problems.append(f"clip_flux={clip_flux} must be > 0 or None")
    if not input_scaling > 0:
        problems.append(f"input_scaling={input_scaling} must be > 0")
    if len(normalization_range) != 2 or not normalization_range[0] < normalization_range[1]:
        problems.append(f"normalization_range={tuple(normalization_range)} must be (low, high) with low < high")
    return problems


class SpectrumCodec(Codec):
    """Tokenizes spectra of any survey (DESI, SDSS) on the shared latent grid; see the module docstring.

    The constructor's arguments and defaults are the reference's. Those defaults are inconsistent (the reference
    fails on them too): AION-1's codec is ``SpectrumCodec(latent_channels=768, embedding_dim=10)`` with the other
    defaults; a wrong combination raises ``ValueError`` listing every value to change.

    Args:
        encoder_depths: ConvNeXt blocks per encoder stage.
        encoder_dims: channels per encoder stage; the last must equal ``latent_channels``.
        decoder_depths: ConvNeXt blocks per decoder stage.
        decoder_dims: channels per decoder stage; the last is 1 (flux) or 2 (flux and mask logits).
        lambda_min: first latent grid point (Å).
        resolution: latent grid step (Å).
        num_pixels: latent grid length G, a multiple of the encoder's down-sampling (32 for 4 stages).
        latent_channels: encoder output channels C.
        embedding_dim: channels fed to the quantizer; must equal ``dim``.
        clip_ivar: upper clip of the inverse variance (None: only negative values are clipped, to 0).
        clip_flux: symmetric flux clip, or None.
        input_scaling: factor ``a`` applied to the normalised flux and inverse standard deviation.
        normalization_range: (low, high) of the normalisation token's linear bins, in ``log10(1 + f)``.
        codebook_size: number of LFQ codes and of normalisation bins.
        dim: LFQ input dimension.

    State dict (same keys and shapes as the reference): ``encoder.*``, ``decoder.*``, ``pre_quant_norm.*``,
    ``quant_conv.*``, ``post_quant_conv.*``, ``normalization_quantizer.buckets``, ``latent_grid.{lambda_min,
    resolution, length, _wavelength}``, ``_quantizer._quantizer.mask``.
    """

    #: ``decode`` takes a ``modality=`` class; CodecManager passes the class it was asked for.
    decodes_several_modalities = True
    network_name = "spectrum"

    def __init__(
        self,
        encoder_depths: tuple[int, ...] = (3, 3, 9, 3),
        encoder_dims: tuple[int, ...] = (96, 192, 384, 768),
        decoder_depths: tuple[int, ...] = (3, 3, 9, 3),
        decoder_dims: tuple[int, ...] = (384, 192, 96, 1),
        lambda_min: float = 3500.0,
        resolution: float = 0.8,
        num_pixels: int = 8704,
        latent_channels: int = 512,
        embedding_dim: int = 4,
        clip_ivar: float | None = 100,
        clip_flux: float | None = None,
        input_scaling: float = 0.2,
        normalization_range: tuple[float, float] = (-1, 5),
        codebook_size: int = 1024,
        dim: int = 10,
    ):
        super().__init__()
        problems = _config_problems(
            encoder_depths, encoder_dims, decoder_depths, decoder_dims, resolution, num_pixels, latent_channels,
            embedding_dim, clip_ivar, clip_flux, input_scaling, normalization_range, codebook_size, dim,
        )  # fmt: skip
        if problems:
            raise ValueError(
                "inconsistent SpectrumCodec configuration:\n  - "
                + "\n  - ".join(problems)
                + "\n(AION-1's spectrum codec: SpectrumCodec(latent_channels=768, embedding_dim=10), other defaults.)"
            )
        # Modules are created in the reference's order, so a given torch seed yields the same random weights and
        # the state dict lists the same keys in the same order.
        self._quantizer = LookupFreeQuantizer(dim=dim, codebook_size=codebook_size)
        self.encoder = ConvNeXtEncoder1d(in_chans=2, depths=encoder_depths, dims=encoder_dims)
        self.decoder = ConvNeXtDecoder1d(in_chans=latent_channels, depths=decoder_depths, dims=decoder_dims)
        self.normalization_quantizer = ScalarLinearQuantizer(codebook_size=codebook_size, range=normalization_range)
        self.latent_grid = LatentSpectralGrid(lambda_min=lambda_min, resolution=resolution, num_pixels=num_pixels)
        self.pre_quant_norm = nn.LayerNorm(latent_channels)
        self.quant_conv = nn.Conv1d(latent_channels, embedding_dim, 1)
        self.post_quant_conv = nn.Conv1d(embedding_dim, latent_channels, 1)
        self.clip_ivar = clip_ivar
        self.clip_flux = clip_flux
        self.input_scaling = float(input_scaling)
        self.num_latent_tokens = num_pixels // self.encoder.downsampling

    @property
    def modality(self) -> type[Spectrum]:
        return Spectrum

    @property
    def quantizer(self) -> Quantizer:
        """The lookup-free quantizer of the latent sequence (the normalisation has its own quantizer)."""
        return self._quantizer

    @property
    def num_tokens(self) -> int:
        """Tokens per spectrum: 1 normalisation token + the latent sequence (273 for AION-1)."""
        return 1 + self.num_latent_tokens

    # ------------------------------------------------------------------ encoding

    def _validated_inputs(self, x: Spectrum) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """float32 (flux, ivar, wavelength) and bool mask on the codec's device; raises on the refused inputs.

        The three row checks are reduced on the device and read back together: one host sync per batch.
        """
        device = self.device
        flux = x.flux.to(device=device, dtype=torch.float32)
        ivar = x.ivar.to(device=device, dtype=torch.float32)
        wavelength = x.wavelength.to(device=device, dtype=torch.float32)
        mask = x.mask.to(device=device)
        unflagged = (~torch.isfinite(flux) | ~torch.isfinite(ivar)) & ~mask
        all_masked = mask.all(dim=-1)
        grid = self.latent_grid.wavelength
        outside = rows_without_overlap(wavelength.detach(), grid)
        flags = torch.stack([unflagged.any(), all_masked.any(), outside.any()]).tolist()
        any_unflagged, any_all_masked, any_outside = flags
        if any_unflagged:
            raise ValueError(
                f"spectrum rows {_rows(unflagged.any(dim=-1))} have NaN/inf flux or ivar at pixels not flagged in "
                f"mask. Flag them as bad, e.g. mask = mask | ~torch.isfinite(flux) | ~torch.isfinite(ivar); "
                f"flagged pixels are ignored by the normalisation."
            )
        if any_all_masked:
            raise ValueError(
                f"spectrum rows {_rows(all_masked)} have every pixel masked, so there is nothing to tokenize; "
                f"drop these rows (or fix their mask: True marks a BAD pixel)."
            )
        if any_outside:
            raise ValueError(
                f"spectrum rows {_rows(outside)} do not overlap the latent grid "
                f"[{grid[0].item():.1f}, {grid[-1].item():.1f}] Angstrom; wavelengths must be observed-frame Angstrom "
                f"(not nm, not log10), and these rows must be dropped if they really lie outside."
            )
        return flux, ivar, mask, wavelength

    def _normalization_codes(self, flux: Tensor, mask: Tensor) -> Tensor:
        """(B, L) cleaned flux and bad-pixel mask -> (B,) int64 normalisation token."""
        total = torch.where(mask, 0.0, flux).sum(dim=-1)
        count = torch.count_nonzero(~mask, dim=-1) + 1.0
        mean = torch.clamp(total / count, min=0.1)
        return self.normalization_quantizer.encode(torch.log10(mean + 1.0))

    def flux_scale(self, normalization: Tensor) -> Tensor:
        """(B,) normalisation tokens -> (B,) flux scale ``n = max(10**bin - 1, 0.1)``."""
        level = self.normalization_quantizer.decode(normalization)
        return torch.clamp(10**level - 1.0, min=0.1)

    # ------------------------------------------------------------------ stages

    def preprocess(self, x: Spectrum) -> SpectrumInput:
        """Validates and preprocesses spectra (steps 1-4 of the module docstring).

        The dispatched op (:func:`~aion_fast.ops.spectrum_to_latent`) runs; when the flux or ivar requires grad
        under autograd, its PyTorch reference does, so gradients reach them.

        Raises:
            ValueError: not a Spectrum; NaN/inf at unflagged pixels; all-masked rows; rows outside the grid.
        """
        self.check_input(x)
        flux, ivar, mask, wavelength = self._validated_inputs(x)
        clean_flux = torch.nan_to_num(flux.detach())
        if self.clip_flux is not None:
            clean_flux = torch.clamp(clean_flux, -self.clip_flux, self.clip_flux)
        normalization = self._normalization_codes(clean_flux.contiguous(), mask)
        n = self.flux_scale(normalization)
        args = (flux, ivar, wavelength, n, self.latent_grid.wavelength, self.input_scaling, self.clip_flux)
        differentiable = torch.is_grad_enabled() and (flux.requires_grad or ivar.requires_grad)
        grid = (torch_spectrum_to_latent if differentiable else spectrum_to_latent)(*args, self.clip_ivar)
        return SpectrumInput(grid, normalization)

    def network_input(self, inputs: SpectrumInput) -> Tensor:
        return inputs.grid

    def encoder_network(self) -> SpectrumEncoderNetwork:
        return SpectrumEncoderNetwork(self)

    def network_example(self, batch: int = 2) -> Tensor:
        return torch.randn(batch, 2, self.latent_grid.wavelength.shape[0])

    def encode_latents(self, inputs: SpectrumInput) -> SpectrumLatents:
        """:class:`SpectrumInput` -> :class:`SpectrumLatents` (ConvNeXt encoder, LayerNorm, 1x1 conv: (B, E, T))."""
        return SpectrumLatents(self.network()(inputs.grid), inputs.normalization)

    def quantize(self, latents: SpectrumLatents) -> Tensor:
        """:class:`SpectrumLatents` -> (B, 1 + T) int64 tokens: the normalisation token, then T LFQ tokens."""
        codes = self.quantizer.encode(latents.latents, channel_first=True)
        return torch.cat([latents.normalization[:, None], codes], dim=1)

    def dequantize(self, tokens: Tensor) -> SpectrumLatents:
        """(B, 1 + T) tokens -> :class:`SpectrumLatents` with the (B, E, T) LFQ codes."""
        return SpectrumLatents(self.quantizer.decode(tokens[:, 1:], channel_first=True), tokens[:, 0])

    def decode_latents(self, latents: SpectrumLatents) -> SpectrumOutput:
        """:class:`SpectrumLatents` -> :class:`SpectrumOutput` ((B, 1 or 2, G) decoder output on the latent grid)."""
        return SpectrumOutput(self.decoder(self.post_quant_conv(latents.latents)), latents.normalization)

    def postprocess(
        self, outputs: SpectrumOutput, wavelength: Tensor | None = None, modality: type[Spectrum] = DESISpectrum
    ) -> Spectrum:
        """:class:`SpectrumOutput` -> spectra (see :meth:`decode` for the arguments).

        The dispatched op (:func:`~aion_fast.ops.spectrum_to_observed`) runs; under autograd, when the decoder
        output requires grad, its PyTorch reference does (the flux is then differentiable, the mask never is).
        """
        _check_spectrum_class(modality)
        values = outputs.values
        batch = values.shape[0]
        grid = self.latent_grid.wavelength
        if wavelength is not None:
            wavelength = torch.as_tensor(wavelength).to(device=values.device, dtype=torch.float32)
            if wavelength.ndim == 1:
                wavelength = wavelength.expand(batch, -1).contiguous()
            if wavelength.ndim != 2 or wavelength.shape[0] != batch:
                raise ValueError(
                    f"wavelength must have shape (M,) or ({batch}, M) for {batch} spectra, got "
                    f"{tuple(wavelength.shape)}."
                )
        scale = None if outputs.normalization is None else self.flux_scale(outputs.normalization)
        # interpolation onto the requested wavelengths, (v + 1) * n and round(sigmoid(logit)): one dispatched pass
        differentiable = torch.is_grad_enabled() and values.requires_grad
        flux, mask = (torch_spectrum_to_observed if differentiable else spectrum_to_observed)(
            values, grid, wavelength, scale
        )
        if wavelength is None:
            wavelength = grid.expand(batch, -1).clone()
        return modality(flux=flux, ivar=torch.ones_like(flux), mask=mask, wavelength=wavelength)

    # ------------------------------------------------------------------ encoding

    def encode(self, x: Spectrum) -> Tensor:
        """Tokenizes a batch of spectra.

        Args:
            x: a Spectrum (DESISpectrum, SDSSSpectrum) with (B, L) flux, ivar, mask (True = bad) and wavelength
                (Å, strictly increasing per row).

        Returns:
            (B, 1 + T) int64 tokens: the normalisation token, then T = 272 LFQ tokens (for AION-1's grid).

        Raises:
            ValueError: not a Spectrum; NaN/inf at unflagged pixels; all-masked rows; rows outside the grid.
        """
        return super().encode(x)

    def encode_batches(self, spectra: Sequence[Spectrum], preprocessed: Sequence[None] | None = None) -> list[Tensor]:
        """Tokens of several spectrum batches (e.g. one per SDSS row length) with one pass of the network.

        Each batch is validated, normalised and resampled onto the latent grid on its own (the resampling needs rows
        of one length), then the (B_i, 2, G) grids are concatenated for the encoder and the quantizer.

        Args:
            spectra: Spectrum batches (any lengths).
            preprocessed: unused (spectra have no externally preprocessed form); accepted as for every codec.

        Returns:
            One (B_i, 1 + T) int64 token tensor per batch, equal to :meth:`encode` of each batch.
        """
        with torch.inference_mode():
            inputs = [self.preprocess(spectrum) for spectrum in spectra]
            joined = SpectrumInput(torch.cat([i.grid for i in inputs]), torch.cat([i.normalization for i in inputs]))
            tokens = self.quantize(self.encode_latents(joined))
        return [as_normal_tensor(t) for t in tokens.split([i.grid.shape[0] for i in inputs])]

    # ------------------------------------------------------------------ decoding

    def decode(
        self, tokens: Tensor, wavelength: Tensor | None = None, modality: type[Spectrum] = DESISpectrum
    ) -> Spectrum:
        """Reconstructs spectra from tokens.

        Args:
            tokens: (B, 1 + T) integer tokens from ``encode`` (or generated).
            wavelength: optional (B, M) or (M,) observed wavelengths (Å, strictly increasing) to resample onto;
                default: the latent grid. Outside the latent grid the flux is the normalisation level ``n``
                (the normalised reconstruction is zero there), as in the reference.
            modality: the Spectrum class to return; DESISpectrum by default (tokens do not say which survey they
                came from; CodecManager passes the class it decodes).

        Returns:
            ``modality`` with (B, M) flux, ivar = ones, mask (True = predicted bad; all False when the decoder has
            a single output channel) and wavelength.
        """
        _check_spectrum_class(modality)
        return super().decode(tokens, wavelength=wavelength, modality=modality)

    def check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
            raise ValueError(
                f"spectrum tokens must have shape (batch, {self.num_tokens}) (normalisation token + "
                f"{self.num_latent_tokens} latent tokens), got {tuple(tokens.shape)}."
            )
