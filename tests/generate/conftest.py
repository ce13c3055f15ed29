"""A tiny checkpoint written by the reference (transformer + Z and g/r/i/z flux codecs) for the generation tests."""

from __future__ import annotations

import pytest
import torch

FLUX_KEYS = ["tok_flux_g", "tok_flux_r", "tok_flux_i", "tok_flux_z"]
DOMAINS = [*FLUX_KEYS, "tok_spectrum_desi", "tok_z"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(directory, reference AION) with random weights; the directory holds the aion-base layout."""
    pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
    from aion import AION as RefAION
    from aion import codecs as ref_codecs
    from aion import modalities as ref_m

    from tests.test_end_to_end import TINY_TRANSFORMER

    torch.manual_seed(11)
    root = tmp_path_factory.mktemp("aion_tiny_generate")
    for name, cls in [("FLUX_G", ref_m.LegacySurveyFluxG), ("FLUX_R", ref_m.LegacySurveyFluxR),
                      ("FLUX_I", ref_m.LegacySurveyFluxI), ("FLUX_Z", ref_m.LegacySurveyFluxZ)]:  # fmt: skip
        codec = ref_codecs.LogScalarCodec(name, 1024, 4000)
        codec._quantizer._update_reservoirs(torch.exp(torch.randn(6000)))
        codec.save_pretrained(root, modality=cls)
    ref_codecs.GridScalarCodec("Z", 1024).save_pretrained(root, modality=ref_m.Z)
    model = RefAION({"domains_in": DOMAINS, "domains_out": DOMAINS, **TINY_TRANSFORMER}).eval()
    with torch.no_grad():  # sharper logits than the init's, so argmax ties cannot occur and samples vary
        for head in model.decoder_embeddings.values():
            head.to_logits.weight.mul_(20.0)
    model.save_pretrained(root)
    return root, model


def flux_tokens(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random photometry tokens (B, 1) per band."""
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randint(0, 1024, (batch, 1), generator=g) for key in FLUX_KEYS}
