"""The reference's codec surface, name for name, with the reference package as the oracle.

What the reference's own ``tests/codecs`` suite and tutorials reach: ``aion.codecs.config`` (``HF_REPO_ID``,
``MODALITY_CODEC_MAPPING``), ``CodecManager._load_codec`` (a cached loader with ``cache_info``/``cache_clear``),
``TypeError`` for a codec asked for another codec's modality before any file is read, the token shapes of 0-d and
(1, B) scalars, and the hub keywords of ``from_pretrained``. Checkpoints are written by the reference and served
offline from a local cache laid out as huggingface_hub lays it out.
"""

from __future__ import annotations

import pytest
import torch

import aion_fast.codecs as fc
from aion_fast import hub
from aion_fast import modalities as fm
from aion_fast.codecs.config import HF_REPO_ID, MODALITY_CODEC_MAPPING, CodecHFConfig
from aion_fast.codecs.manager import CodecManager, ModalityTypeError
from tests.utils import make_hub_cache

aion = pytest.importorskip("aion")
huggingface_hub = pytest.importorskip("huggingface_hub")
from aion import codecs as rc  # noqa: E402
from aion import modalities as rm  # noqa: E402
from aion.codecs import config as reference_config  # noqa: E402
from aion.codecs.manager import CodecManager as ReferenceManager  # noqa: E402
from aion.codecs.manager import ModalityTypeError as ReferenceModalityTypeError  # noqa: E402

COMMIT_MAIN = "1" * 40
COMMIT_OLD = "2" * 40


def _write_scalar_codecs(root, seed: int) -> None:
    """Reference-written FLUX_G (log reservoir), SHAPE_E1 (reservoir) and Z (linear grid) codecs."""
    torch.manual_seed(seed)
    flux = rc.LogScalarCodec("FLUX_G", 1024, 4000)
    flux._quantizer._update_reservoirs(torch.exp(torch.randn(6000) * 1.5))
    flux.save_pretrained(root, modality=rm.LegacySurveyFluxG)
    shape = rc.ScalarCodec("SHAPE_E1", 1024, 4000)
    shape._quantizer._update_reservoirs(torch.randn(6000) * 0.2)
    shape.save_pretrained(root, modality=rm.LegacySurveyShapeE1)
    rc.GridScalarCodec("Z", 1024).save_pretrained(root, modality=rm.Z)
    image = rc.ImageCodec(quantizer_levels=[7, 5, 5, 5, 5], hidden_dims=8, n_compressions=2, num_consecutive=1)
    image.save_pretrained(root, modality=rm.LegacySurveyImage)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A hub cache holding ``polymathic-ai/aion-base`` at two commits (``main`` and an older one, other weights)."""
    main, old = tmp_path_factory.mktemp("codecs_main"), tmp_path_factory.mktemp("codecs_old")
    _write_scalar_codecs(main, seed=1)
    _write_scalar_codecs(old, seed=2)
    cache = tmp_path_factory.mktemp("hub_cache")
    make_hub_cache(main, cache, HF_REPO_ID, COMMIT_MAIN)
    make_hub_cache(old, cache, HF_REPO_ID, COMMIT_OLD, refs=())
    return cache


@pytest.fixture
def default_cache(hub_cache, monkeypatch):
    """Makes the cache huggingface_hub's default one, where both packages' ``CodecManager()`` look."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    ReferenceManager._load_codec.cache_clear()  # the reference's cache is shared by all its managers
    yield hub_cache
    ReferenceManager._load_codec.cache_clear()


@pytest.fixture
def no_file_reads(monkeypatch):
    """Fails the test if a checkpoint file is looked up (local or hub)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a checkpoint file was looked up: {args}")

    monkeypatch.setattr(hub, "resolve_file", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def _names(mapping) -> dict[str, str]:
    return {modality.__name__: codec.__name__ for modality, codec in mapping.items()}


def test_config_module_matches_reference():
    assert HF_REPO_ID == reference_config.HF_REPO_ID == "polymathic-ai/aion-base"
    assert _names(MODALITY_CODEC_MAPPING) == _names(reference_config.MODALITY_CODEC_MAPPING)
    for modality, codec in MODALITY_CODEC_MAPPING.items():
        assert modality is getattr(fm, modality.__name__) and codec is getattr(fc, codec.__name__)
    entry = CodecHFConfig(codec_class=fc.ImageCodec, repo_id=HF_REPO_ID)
    assert (entry.codec_class, entry.repo_id) == (fc.ImageCodec, HF_REPO_ID)


def test_load_codec_is_a_cached_loader_like_the_reference(default_cache):
    ours, theirs = CodecManager(device="cpu"), ReferenceManager(device="cpu")
    values = [torch.exp(torch.randn(4, 1, generator=torch.Generator().manual_seed(s))) for s in (0, 1)]
    for manager, module in ((ours, fm), (theirs, rm)):
        manager.encode(module.LegacySurveyFluxG(value=values[0]))
        manager.encode(module.LegacySurveyFluxG(value=values[1]))
        info = manager._load_codec.cache_info()
        assert (info.hits, info.misses) == (1, 1)
        first = manager._load_codec(module.LegacySurveyFluxG)
        assert manager._load_codec(module.LegacySurveyFluxG) is first
        manager._load_codec.cache_clear()
        assert manager._load_codec.cache_info().currsize == 0
        assert manager._load_codec(module.LegacySurveyFluxG) is first  # loaded codecs outlive the cache entry
        assert manager._load_codec.cache_info().misses == 1
    tokens = ours.encode(fm.LegacySurveyFluxG(value=values[0]))["tok_flux_g"]
    assert torch.equal(tokens, theirs.encode(rm.LegacySurveyFluxG(value=values[0]))["tok_flux_g"])
    assert CodecManager(device="cpu")._load_codec.cache_info().currsize == 0  # one cache per manager


def test_load_codec_rejects_non_modalities_before_reading(no_file_reads):
    class InvalidModality:
        pass

    manager = CodecManager(device="cpu")
    for bad in (InvalidModality, fm.Scalar, fm.Modality):
        with pytest.raises(ModalityTypeError):
            manager._load_codec(bad)
    assert issubclass(ModalityTypeError, TypeError)
    with pytest.raises(ReferenceModalityTypeError):
        ReferenceManager(device="cpu")._load_codec(InvalidModality)
    ReferenceManager._load_codec.cache_clear()


@pytest.mark.parametrize(
    "codec,modality",
    [("ImageCodec", "LegacySurveyCatalog"), ("ScalarCodec", "Z"), ("GridScalarCodec", "LegacySurveyFluxG"),
     ("SpectrumCodec", "LegacySurveyImage"), ("LogScalarCodec", "LegacySurveyShapeE1")],
)  # fmt: skip
def test_wrong_codec_class_raises_type_error_before_reading(no_file_reads, codec, modality):
    with pytest.raises(TypeError) as theirs:
        getattr(rc, codec).from_pretrained(HF_REPO_ID, modality=getattr(rm, modality))
    with pytest.raises(TypeError, match=f"{modality} is tokenized by") as ours:
        getattr(fc, codec).from_pretrained(HF_REPO_ID, modality=getattr(fm, modality))
    assert type(ours.value) is type(theirs.value) is TypeError


def test_non_modality_raises_value_error_like_the_reference(no_file_reads):
    with pytest.raises(ValueError):
        rc.ScalarCodec.from_pretrained(HF_REPO_ID, modality=int)
    with pytest.raises(ValueError, match="has no codec"):
        fc.ScalarCodec.from_pretrained(HF_REPO_ID, modality=int)
    with pytest.raises(ValueError, match="has no codec"):
        fc.ScalarCodec.from_pretrained(HF_REPO_ID, modality=fm.Scalar)


def test_tutorial_and_readme_scalars_give_the_reference_token_shapes(default_cache):
    """Tutorial: ``codec_manager.encode(Z(value=torch.tensor(z)))`` with a float32 z; README:
    ``LegacySurveyFluxG(value=torch.tensor([flux_values]))``, one row of B values."""
    ours, theirs = CodecManager(device="cpu"), ReferenceManager(device="cpu")
    flux_values = [0.5, 3.0, 12.0, 80.0, 0.01]
    cases = [
        ("Z", torch.tensor(0.3127, dtype=torch.float32)),
        ("LegacySurveyFluxG", torch.tensor([flux_values])),
        ("LegacySurveyFluxG", torch.tensor(flux_values)[:, None]),
        ("LegacySurveyFluxG", torch.tensor(7.5)),
        ("LegacySurveyShapeE1", torch.tensor([[0.1, -0.2, 0.05]])),
    ]
    for name, value in cases:
        expected = theirs.encode(getattr(rm, name)(value=value))
        actual = ours.encode(getattr(fm, name)(value=value))
        key = getattr(fm, name).token_key
        assert actual[key].shape == expected[key].shape == value.shape, (name, tuple(value.shape))
        assert actual[key].dtype == torch.int64  # the reference's Z codec returns int32
        assert torch.equal(actual[key], expected[key].long()), name
        decoded, reference_decoded = ours.decode(actual, getattr(fm, name)), theirs.decode(expected, getattr(rm, name))
        assert decoded.value.shape == reference_decoded.value.shape == value.shape
        torch.testing.assert_close(decoded.value, reference_decoded.value, rtol=0, atol=0)
    assert fm.Z(value=torch.tensor(0.2)).batch_size == 1
    assert fm.LegacySurveyFluxG(value=torch.tensor([flux_values])).batch_size == len(flux_values)


def test_scalar_shapes_still_validated():
    with pytest.raises(ValueError, match="one value per object"):
        fm.LegacySurveyFluxG(value=torch.ones(2, 3))
    with pytest.raises(ValueError, match="empty batch"):
        fm.LegacySurveyFluxG(value=torch.ones(0))
    with pytest.raises(ValueError, match=r"\(batch, 55\)"):
        fm.GaiaXpBp(value=torch.ones(55))


def test_codec_hub_keywords_with_a_local_cache(hub_cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache / "elsewhere"))  # not the default
    options = {"cache_dir": hub_cache, "local_files_only": True}
    for revision in (None, "main", COMMIT_MAIN, COMMIT_OLD):
        ours = fc.LogScalarCodec.from_pretrained(
            HF_REPO_ID, modality=fm.LegacySurveyFluxG, revision=revision, **options
        )
        theirs = rc.LogScalarCodec.from_pretrained(HF_REPO_ID, modality=rm.LegacySurveyFluxG, revision=revision,
                                                   **options)  # fmt: skip
        assert torch.equal(ours.quantizer.codebook, theirs._quantizer._index_to_val), revision
    main = fc.LogScalarCodec.from_pretrained(HF_REPO_ID, fm.LegacySurveyFluxG, revision="main", **options)
    old = fc.LogScalarCodec.from_pretrained(HF_REPO_ID, fm.LegacySurveyFluxG, revision=COMMIT_OLD, **options)
    assert not torch.equal(main.quantizer.codebook, old.quantizer.codebook)
    with pytest.raises(hub.CheckpointNotFoundError, match="huggingface-cli download"):
        fc.LogScalarCodec.from_pretrained(HF_REPO_ID, fm.LegacySurveyFluxG, revision="3" * 40, **options)
    with pytest.raises(TypeError, match="unexpected keyword"):
        fc.LogScalarCodec.from_pretrained(HF_REPO_ID, fm.LegacySurveyFluxG, revison="main")


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_different_batch_sizes_like_the_reference(default_cache, batch):
    ours, theirs = CodecManager(device="cpu"), ReferenceManager(device="cpu")
    g = torch.Generator().manual_seed(batch)
    flux, shape = torch.exp(torch.randn(batch, 1, generator=g)), torch.randn(batch, 1, generator=g) * 0.2
    tokens = ours.encode(fm.LegacySurveyFluxG(value=flux), fm.LegacySurveyShapeE1(value=shape))
    expected = theirs.encode(rm.LegacySurveyFluxG(value=flux), rm.LegacySurveyShapeE1(value=shape))
    for key in ("tok_flux_g", "tok_shape_e1"):
        assert tokens[key].shape == expected[key].shape == (batch, 1) and torch.equal(tokens[key], expected[key])
    for ours_type, their_type in ((fm.LegacySurveyFluxG, rm.LegacySurveyFluxG), (fm.LegacySurveyShapeE1,
                                                                                 rm.LegacySurveyShapeE1)):  # fmt: skip
        decoded, reference = ours.decode(tokens, ours_type), theirs.decode(expected, their_type)
        assert decoded.value.shape == reference.value.shape == (batch, 1)
        assert torch.equal(decoded.value, reference.value)


def test_image_codec_from_base_and_survey_modality_is_the_same(hub_cache):
    options = {"cache_dir": hub_cache, "local_files_only": True}
    base = fc.ImageCodec.from_pretrained(HF_REPO_ID, modality=fm.Image, **options)
    survey = fc.ImageCodec.from_pretrained(HF_REPO_ID, modality=fm.LegacySurveyImage, **options)
    reference = rc.ImageCodec.from_pretrained(HF_REPO_ID, modality=rm.Image, **options)
    assert len(list(base.parameters())) > 0
    for a, b in zip(base.parameters(), survey.parameters(), strict=True):
        assert torch.equal(a, b)
    flux = torch.randn(1, 4, 96, 96, generator=torch.Generator().manual_seed(0))  # batch of one
    image = fm.Image(flux=flux, bands=["DES-G", "DES-R", "DES-I", "DES-Z"])
    tokens = base.encode(image)
    with torch.no_grad():
        assert torch.equal(tokens, reference.encode(rm.Image(flux=flux, bands=image.bands)).long())
    assert base.decode(tokens, bands=image.bands).flux.shape == flux.shape
