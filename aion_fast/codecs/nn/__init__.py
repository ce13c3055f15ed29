"""Network building blocks of the codecs: the MagViT image autoencoder and the scalar-field VQ-VAE encoder/decoder."""

from aion_fast.codecs.nn.convblocks import Decoder2d, Encoder2d, ResBlock, ResLayer
from aion_fast.codecs.nn.magvit import (
    ChannelLayerNorm,
    MagVitAE,
    ResidualUnit,
    SameConv2d,
    SpatialDownsample2x,
    SpatialUpsample2x,
    SqueezeExcite,
)

__all__ = [
    "ChannelLayerNorm",
    "Decoder2d",
    "Encoder2d",
    "MagVitAE",
    "ResBlock",
    "ResLayer",
    "ResidualUnit",
    "SameConv2d",
    "SpatialDownsample2x",
    "SpatialUpsample2x",
    "SqueezeExcite",
]
