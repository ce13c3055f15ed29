"""The scalar-field codec: Legacy Survey segmentation maps (values in [0, 1]) <-> 144 FSQ tokens (AION-1 paper §4.4).

Encoding: central 96x96 crop of the (B, H, W) field, :class:`~aion_fast.codecs.nn.convblocks.Encoder2d` (three
stride-2 convolutions -> (B, D, 12, 12)), 1x1 convolution to the 4 FSQ channels, FSQ with levels [8, 5, 5, 5]
(1000 codes) -> int64 tokens (B, 144). Decoding: FSQ codes, 1x1 convolution,
:class:`~aion_fast.codecs.nn.convblocks.Decoder2d`, output activation (sigmoid), optional range extension
:math:`(1 + 2d)\\,y - d`, clip to [0, 1].

Checkpoints: same constructor arguments and state-dict keys as the reference ``aion.codecs.ScalarFieldCodec``
(including ``ema.module.*`` when ``ema_model_weights`` is set). The callables ``output_activation`` and
``reconstruction_loss`` are accepted but, as with the reference, not written to ``config.json`` (JSON cannot hold
them); ``output_activation=None`` (identity) is.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.codecs.base import Codec
from aion_fast.codecs.nn.convblocks import Decoder2d, Encoder2d
from aion_fast.codecs.preprocessing import CROP_SIZE, center_crop, require_finite
from aion_fast.modalities import LegacySurveySegmentationMap
from aion_fast.quantizers import FiniteScalarQuantizer

__all__ = ["ScalarFieldCodec"]

_SIGMOIDS = (torch.sigmoid, F.sigmoid)
_NOT_IN_CONFIG = ("output_activation", "reconstruction_loss")


class _EmaWeights(nn.Module):
    """Holder of the exponential-moving-average copy of a codec (checkpoint keys ``ema.module.*``)."""

    def __init__(self, module: nn.Module, decay: float):
        super().__init__()
        self.module = module
        self.decay = decay


class ScalarFieldCodec(Codec):
    """Convolutional VQ-VAE + FSQ tokenizer of single-channel maps in [0, 1].

    Args:
        encoder_output_dim: channels D of the encoder output (512 in the paper).
        decoder_input_dim: channels after the post-quantization projection (default D).
        embedding_dim: latent channels fed to FSQ (default D); must equal ``len(levels)``.
        res_hidden_dims: hidden channels of the residual layers.
        num_res_layers: residual layers in the encoder and the decoder.
        num_downsamples: stride-2 steps; the token grid is ``96 / 2**num_downsamples`` wide (12 -> 144 tokens).
        variational: build the pre-quantization projection with 2x channels (mean, log-variance), as the reference
            does; such a codec cannot be tokenized (raises in ``encode``).
        output_activation: callable applied to the decoder output (sigmoid); ``None`` = identity.
        output_activation_extension: ``d`` of the range extension ``(1 + 2d) y - d``, or None.
        reconstruction_loss, quantisation_loss_weight, lr, lr_warmup, begin_cosine_annealing, lr_cosine_period,
            ema_decay, ema_update_freq: training settings, stored for checkpoint compatibility only.
        ema_model_weights: keep an exponential-moving-average copy of the weights (``ema.module.*`` in the state
            dict; inference uses the main weights, as the reference does).
        levels: FSQ levels, ``[8, 5, 5, 5]`` (1000 codes).

    The codec is built in eval mode (BatchNorm uses its running statistics); call ``.train()`` to fine-tune.
    """

    def __init__(
        self,
        encoder_output_dim: int,
        decoder_input_dim: int | None = None,
        embedding_dim: int | None = None,
        res_hidden_dims: int = 64,
        num_res_layers: int = 2,
        num_downsamples: int = 3,
        variational: bool = False,
        output_activation: Callable[[Tensor], Tensor] | None = F.sigmoid,
        output_activation_extension: float | None = None,
        reconstruction_loss: Callable[..., Tensor] = F.mse_loss,
        quantisation_loss_weight: float = 1.0,
        lr: float = 1e-3,
        lr_warmup: int | None = None,
        begin_cosine_annealing: int | None = None,
        lr_cosine_period: int | None = None,
        ema_model_weights: bool = False,
        ema_decay: float = 0.9999,
        ema_update_freq: int = 1,
        levels: Sequence[int] = (8, 5, 5, 5),
    ):
        super().__init__()
        self.config = {k: v for k, v in self.config.items() if k not in _NOT_IN_CONFIG or v is None}
        if output_activation is not None and output_activation not in _SIGMOIDS:
            warnings.warn(
                "ScalarFieldCodec: a custom output_activation is not saved in config.json (JSON cannot hold "
                "callables); pass it again when loading the checkpoint.",
                stacklevel=2,
            )
        levels = [int(level) for level in levels]
        decoder_input_dim = decoder_input_dim or encoder_output_dim
        embedding_dim = embedding_dim or encoder_output_dim
        if embedding_dim != len(levels):
            raise ValueError(
                f"ScalarFieldCodec: embedding_dim ({embedding_dim}) must equal the number of FSQ levels ({levels}); "
                f"pass embedding_dim={len(levels)}."
            )
        if CROP_SIZE % 2**num_downsamples:
            raise ValueError(f"ScalarFieldCodec: num_downsamples={num_downsamples} does not divide the 96-pixel crop.")
        self.encoder_output_dim = encoder_output_dim
        self.decoder_input_dim = decoder_input_dim
        self.embedding_dim = embedding_dim
        self.variational = variational
        self.output_activation = output_activation
        self.output_activation_extension = output_activation_extension
        self.reconstruction_loss = reconstruction_loss
        self.grid_size = CROP_SIZE // 2**num_downsamples

        self.encode_proj = nn.Conv2d(encoder_output_dim, 2 * embedding_dim if variational else embedding_dim, 1)
        self.decode_proj = nn.Conv2d(embedding_dim, decoder_input_dim, 1)
        self._quantizer = FiniteScalarQuantizer(levels)
        self.encoder = Encoder2d(1, encoder_output_dim, res_hidden_dims, num_res_layers, num_downsamples)
        self.decoder = Decoder2d(
            decoder_input_dim, 1, decoder_input_dim, res_hidden_dims, num_res_layers, num_upsamples=num_downsamples
        )
        self.ema = _EmaWeights(copy.deepcopy(self), ema_decay) if ema_model_weights else None
        self.eval()

    @property
    def modality(self) -> type[LegacySurveySegmentationMap]:
        return LegacySurveySegmentationMap

    @property
    def quantizer(self) -> FiniteScalarQuantizer:
        return self._quantizer

    @property
    def num_tokens(self) -> int:
        """Tokens per map (144 for the released codec)."""
        return self.grid_size**2

    def preprocess(self, x: LegacySurveySegmentationMap) -> Tensor:
        """Validated maps (B, H, W) -> (B, 1, 96, 96) float32 central crop on the codec's device."""
        self.check_input(x)
        if self.variational:
            raise NotImplementedError(
                "ScalarFieldCodec(variational=True) outputs mean and log-variance channels, which FSQ cannot "
                "tokenize; use a codec built with variational=False."
            )
        what = f"{type(x).__name__}.field"
        field = center_crop(x.field.unsqueeze(1), CROP_SIZE, what).to(device=self.device, dtype=torch.float32)
        require_finite(field, what)
        return field

    def encode_latents(self, inputs: Tensor) -> Tensor:
        """(B, 1, 96, 96) maps -> (B, embedding_dim, num_tokens) latents before quantization."""
        return self.encode_proj(self.encoder(inputs)).flatten(2)

    def decode(self, z: Tensor) -> LegacySurveySegmentationMap:
        """Reconstructs maps from tokens.

        Args:
            z: (B, num_tokens) integer tokens.

        Returns:
            ``LegacySurveySegmentationMap`` with a float32 field (B, 96, 96) in [0, 1].
        """
        return super().decode(z)

    def check_tokens(self, z: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.num_tokens:
            raise ValueError(
                f"ScalarFieldCodec.decode expects tokens of shape (batch, {self.num_tokens}), got {tuple(z.shape)}."
            )

    def decode_latents(self, latents: Tensor) -> Tensor:
        """(B, embedding_dim, num_tokens) latents -> (B, 1, 96, 96) decoder output (before the output activation)."""
        b, d, _ = latents.shape
        side = self.grid_size
        # channels-last latents: the layout (and hence oneDNN kernel and rounding) of the reference
        z = latents.reshape(b, d, side, side).contiguous(memory_format=torch.channels_last)
        return self.decoder(self.decode_proj(z))

    def postprocess(self, outputs: Tensor) -> LegacySurveySegmentationMap:
        """(B, 1, 96, 96) decoder output -> maps (B, 96, 96) in [0, 1]: activation, range extension, clip."""
        y = outputs
        if self.output_activation is not None:
            y = self.output_activation(y)
        extension = self.output_activation_extension
        if extension is not None:
            y = (1 + 2 * extension) * y - extension
        return LegacySurveySegmentationMap(field=y.clamp(0.0, 1.0).squeeze(1).contiguous())
