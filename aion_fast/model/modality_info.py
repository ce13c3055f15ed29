"""Static facts about every token key the AION-1 transformer knows.

Each token key (``tok_image``, ``tok_z``, ``catalog``, ...) names one tokenized modality. The transformer embeds it
either as a fixed *grid* of tokens (images, spectra, Gaia XP coefficients and scalars, which are a 1x1 grid) with
2-D sin-cos positions, or as a variable-length *sequence* (the Legacy Survey catalog) with 1-D sin-cos positions that
skip padded entries.

The numeric modality id is the SHA-256 hash of the token key reduced to 15 bits, exactly as in the released
``polymathic-aion`` package, so that modality masks built here match the reference's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GRID",
    "MODALITY_INFO",
    "SEQUENCE",
    "ModalitySpec",
    "modality_id",
]

GRID: Literal["grid"] = "grid"
SEQUENCE: Literal["sequence"] = "sequence"

#: Length of the 1-D sin-cos table of sequence modalities. The reference builds 512 rows and means to keep only
#: ``max_length`` of them, but its slice acts on the leading singleton axis, so checkpoints store all 512 rows.
SEQUENCE_POSITION_TABLE_LENGTH = 512


def modality_id(token_key: str) -> int:
    """Returns the numeric id of a token key: SHA-256 of its UTF-8 bytes, modulo 2**15.

    Args:
        token_key: Token key such as ``"tok_image"``.

    Returns:
        Integer in ``[0, 32768)``; it fits the int16 modality masks.
    """
    return int(hashlib.sha256(token_key.encode("utf-8")).hexdigest(), 16) % (2**15)


@dataclass(frozen=True)
class ModalitySpec:
    """Embedding facts of one token key.

    Attributes:
        key: Token key, e.g. ``"tok_spectrum_desi"``.
        kind: ``"grid"`` (fixed token grid, 2-D sin-cos positions, decoder input is the mask token) or
            ``"sequence"`` (variable length, 1-D positions counted over non-padded entries, padding id 0).
        vocab_size: Number of token ids; valid ids are ``[0, vocab_size)``.
        id: Numeric modality id (see :func:`modality_id`).
        image_size: Grid modalities: the (height, width) the codec works on, in pixels (1 for scalars).
        patch_size: Grid modalities: pixels per token along each axis.
        max_length: Sequence modalities: the longest sequence the model was trained on (decoder positions at or past
            it fall back to position 0, as in the reference).
        padding_idx: Sequence modalities: the token id reserved for padding.
    """

    key: str
    kind: Literal["grid", "sequence"]
    vocab_size: int
    id: int
    image_size: tuple[int, int] = (1, 1)
    patch_size: int = 1
    max_length: int | None = None
    padding_idx: int | None = None

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of the token grid; ``(0, 0)`` for sequence modalities."""
        if self.kind != GRID:
            return (0, 0)
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def num_tokens(self) -> int | None:
        """Tokens per object for grid modalities (e.g. 576 for ``tok_image``); ``None`` for sequences."""
        if self.kind != GRID:
            return None
        rows, cols = self.grid_shape
        return rows * cols

    @property
    def position_table_length(self) -> int:
        """Rows of the stored sin-cos position buffer (``pos_emb`` has shape ``(1, rows, dim)``)."""
        if self.kind == GRID:
            return self.num_tokens
        return SEQUENCE_POSITION_TABLE_LENGTH


def _grid(key: str, vocab_size: int, image_size: tuple[int, int], patch_size: int) -> ModalitySpec:
    return ModalitySpec(
        key=key, kind=GRID, vocab_size=vocab_size, id=modality_id(key), image_size=image_size, patch_size=patch_size
    )


def _scalar(key: str, vocab_size: int = 1024) -> ModalitySpec:
    return _grid(key, vocab_size, (1, 1), 1)


_SCALAR_KEYS = (
    # HSC photometry, extinction and shape.
    "tok_mag_g",
    "tok_mag_r",
    "tok_mag_i",
    "tok_mag_z",
    "tok_mag_y",
    "tok_a_g",
    "tok_a_r",
    "tok_a_i",
    "tok_a_z",
    "tok_a_y",
    "tok_shape11",
    "tok_shape12",
    "tok_shape22",
    # Legacy Survey photometry, extinction and shape.
    "tok_ebv",
    "tok_flux_g",
    "tok_flux_r",
    "tok_flux_i",
    "tok_flux_z",
    "tok_flux_w1",
    "tok_flux_w2",
    "tok_flux_w3",
    "tok_flux_w4",
    "tok_shape_r",
    "tok_shape_e1",
    "tok_shape_e2",
    # Gaia photometry and astrometry.
    "tok_flux_g_gaia",
    "tok_flux_bp_gaia",
    "tok_flux_rp_gaia",
    "tok_parallax",
    "tok_ra",
    "tok_dec",
)

_SPECS = (
    # Images: 96x96 cut-outs, 4x4-pixel patches -> 24x24 = 576 tokens; FSQ vocabulary 7*5**4.
    _grid("tok_image", 4375, (96, 96), 4),
    _grid("tok_image_hsc", 4375, (96, 96), 4),
    # Segmentation map: 8x8-pixel patches -> 12x12 = 144 tokens.
    _grid("tok_segmap", 1000, (96, 96), 8),
    # Spectra: 272 latent tokens plus one normalization token, laid out as a 273x1 grid.
    _grid("tok_spectrum_desi", 1024, (273, 1), 1),
    _grid("tok_spectrum_sdss", 1024, (273, 1), 1),
    # Gaia BP/RP coefficients: 55x1 grid each.
    _grid("tok_xp_bp", 1024, (55, 1), 1),
    _grid("tok_xp_rp", 1024, (55, 1), 1),
    # Redshift has one extra id.
    _scalar("tok_z", 1025),
    *(_scalar(key) for key in _SCALAR_KEYS),
    # Catalog: 96*2 + 1024*3 value ids, 200 sentinels, start/end/pad/unk -> 3468 ids.
    ModalitySpec(
        key="catalog",
        kind=SEQUENCE,
        vocab_size=3468,
        id=modality_id("catalog"),
        max_length=50,
        padding_idx=0,
    ),
)

#: Token key -> :class:`ModalitySpec` for every modality the reference knows.
MODALITY_INFO: dict[str, ModalitySpec] = {spec.key: spec for spec in _SPECS}
