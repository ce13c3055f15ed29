"""The fused ROAR sampler: Philox known answers, sampling distributions, greedy mode, backend agreement, checks."""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.ops import roar
from aion_fast.ops.roar import philox4x32_10, roar_step, torch_roar_sample, torch_roar_step


def chisquare(*args):
    """scipy.stats.chisquare (the distribution tests skip without scipy; the GPU test does not need it)."""
    return pytest.importorskip("scipy.stats", reason="the distribution tests need scipy").chisquare(*args)


NO_CPP_ROAR = dispatch.load_extension() is None or not hasattr(dispatch.load_extension(), "roar_step")
BACKENDS = [
    "torch",
    pytest.param("cpp", marks=pytest.mark.skipif(NO_CPP_ROAR, reason="aion_fast._C lacks the ROAR op")),
]

# Random123's published known answers for philox4x32_10 (counter, key) -> output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]  # fmt: skip


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(philox4x32_10(torch.tensor(counter), key).tolist()) == expected
    ext = dispatch.load_extension()
    if ext is not None and hasattr(ext, "philox4x32_10"):
        assert tuple(ext.philox4x32_10(*counter, *key)) == expected


def _state(rows: int, length: int):
    return (
        torch.zeros(rows, length, dtype=torch.int64),
        torch.ones(rows, length, dtype=torch.bool),
        torch.zeros(rows, length, dtype=torch.bool),
    )


def _draw(backend, monkeypatch, logits_row, draws_per_slot=2000, temperature=1.0, top_k=0, top_p=0.0, seed=5):
    """Samples every slot of one (N, V) logits row for `draws_per_slot` chains; returns (chains, N) tokens."""
    monkeypatch.setenv("AION_FAST_BACKEND", backend)
    slots = logits_row.shape[0]
    tokens, absent, revealed = _state(draws_per_slot, slots)
    positions = torch.arange(slots).expand(draws_per_slot, -1).contiguous()
    roar_step(logits_row[None], positions, tokens, absent, revealed, torch.arange(draws_per_slot) + 1000,
              torch.arange(draws_per_slot) % 7, seed=seed, step=1, next_step=2, next_count=0,
              temperature=temperature, top_k=top_k, top_p=top_p)  # fmt: skip
    assert not bool(absent.any()) and bool(revealed.all())
    return tokens


def _expected_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Independent float64 statement of the target distribution of one (V,) row."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if 0 < top_k < len(probs):
        keep &= logits >= torch.topk(logits, top_k).values[-1]
    probs = torch.where(keep, probs, 0.0)
    if 0 < top_p < 1:
        ranked = sorted(range(len(probs)), key=lambda i: (-float(logits[i]), i))
        mass, nucleus = 0.0, torch.zeros_like(keep)
        for i in ranked:
            if mass > top_p * float(probs.sum()):
                break
            nucleus[i] = True
            mass += float(probs[i])
        probs = torch.where(nucleus, probs, 0.0)
    return probs / probs.sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 0.0), (0.6, 0, 0.0), (1.7, 0, 0.0), (1.0, 5, 0.0), (1.0, 0, 0.8), (0.8, 7, 0.9), (1.0, 0, 1.0)],
)
def test_frequencies_match_the_tempered_filtered_softmax(backend, monkeypatch, temperature, top_k, top_p):
    g = torch.Generator().manual_seed(3)
    vocab, slots = 13, 9  # 9 slots x 2000 chains = 18000 draws from the same row
    row = torch.randn(vocab, generator=g) * 1.5
    tokens = _draw(backend, monkeypatch, row.expand(slots, -1).contiguous(), temperature=temperature, top_k=top_k,
                   top_p=top_p)  # fmt: skip
    expected = _expected_probs(row, temperature, top_k, top_p)
    counts = torch.bincount(tokens.flatten(), minlength=vocab).double()
    assert bool((counts[expected == 0] == 0).all()), "a filtered-out token was sampled"
    support = expected > 0
    chi2 = chisquare(counts[support].numpy(), (expected[support] * counts.sum()).numpy())
    assert chi2.pvalue > 1e-3, f"chi-square p = {chi2.pvalue:.2e}; counts {counts.tolist()}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_zero_is_argmax_and_ignores_filters(backend, monkeypatch):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(33, 1025, generator=g)
    for top_k, top_p in [(0, 0.0), (3, 0.5)]:
        tokens = _draw(backend, monkeypatch, logits, draws_per_slot=5, temperature=0.0, top_k=top_k, top_p=top_p)
        assert torch.equal(tokens, logits.argmax(-1).expand(5, -1))


def test_greedy_takes_the_first_of_tied_maxima():
    logits = torch.tensor([[0.0, 2.0, 2.0, -1.0]])
    assert torch_roar_sample(logits, torch.tensor([0.5], dtype=torch.float64), 0.0).tolist() == [1]


def _random_step_inputs(rows, slots, vocab, length, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, slots, vocab, generator=g) * 3
    positions = torch.stack([torch.randperm(length, generator=g)[:slots] for _ in range(rows)])
    object_ids = torch.randint(0, 2**62, (rows,), generator=g)
    return logits, positions, object_ids, torch.arange(rows) % 11


@pytest.mark.skipif(NO_CPP_ROAR, reason="aion_fast._C lacks the ROAR op")
@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 0.0), (0.7, 5, 0.0), (1.3, 0, 0.8), (1.0, 50, 0.9), (0.0, 0, 0.0)]
)
@pytest.mark.parametrize(("rows", "slots", "vocab", "length", "next_count"), [(37, 7, 1025, 23, 9), (5, 1, 3, 1, 0)])
def test_cpp_matches_torch_bit_for_bit(temperature, top_k, top_p, rows, slots, vocab, length, next_count):
    logits, positions, object_ids, sample_ids = _random_step_inputs(rows, slots, vocab, length, seed=rows)
    results = []
    for run in (torch_roar_step, roar._cpp_roar_step):
        state = _state(rows, length)
        nxt = run(logits, positions, *state, object_ids, sample_ids, 2**63 + 12345, 3, 4, next_count, temperature,
                  top_k, top_p)  # fmt: skip
        results.append((*state, nxt))
    for ours, ref, what in zip(results[1], results[0], ["tokens", "input_mask", "target_mask", "next_positions"]):
        assert torch.equal(ours, ref), what


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_draws_for_any_batch_split(backend, monkeypatch):
    monkeypatch.setenv("AION_FAST_BACKEND", backend)
    logits, positions, object_ids, sample_ids = _random_step_inputs(12, 4, 50, 10, seed=1)

    def run(rows, seed):
        state = _state(len(rows), 10)
        nxt = roar_step(logits[rows], positions[rows], *state, object_ids[rows], sample_ids[rows], seed=seed, step=0,
                        next_step=1, next_count=3)  # fmt: skip
        return torch.cat([state[0], nxt], dim=1)

    whole = run(torch.arange(12), seed=9)
    assert torch.equal(whole, run(torch.arange(12), seed=9))  # across runs
    split = torch.cat([run(torch.arange(0, 5), 9), run(torch.arange(5, 12), 9)])
    assert torch.equal(whole, split)  # across batch splits
    shuffled = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(whole[shuffled], run(shuffled, 9))  # chain order does not matter either
    assert not torch.equal(whole, run(torch.arange(12), seed=10))  # another seed, other draws


def test_selection_is_a_uniform_random_subset():
    """Each of L unknown positions is chosen for the next step with probability count / L."""
    rows, length, count = 4000, 10, 3
    tokens, absent, revealed = _state(rows, length)
    nxt = torch_roar_step(torch.empty(rows, 0, 5), torch.empty(rows, 0, dtype=torch.int64), tokens, absent, revealed,
                          torch.arange(rows), torch.zeros(rows, dtype=torch.int64), 1, 0, 0, count, 1.0)  # fmt: skip
    assert bool((nxt.sort(-1).values.diff(dim=-1) > 0).all())  # distinct
    hits = torch.bincount(nxt.flatten(), minlength=length).double()
    assert chisquare(hits.numpy()).pvalue > 1e-3


def test_selection_skips_revealed_positions():
    tokens, absent, revealed = _state(3, 6)
    revealed[:, [0, 2, 5]] = True
    nxt = torch_roar_step(torch.empty(3, 0, 5), torch.empty(3, 0, dtype=torch.int64), tokens, absent, revealed,
                          torch.arange(3), torch.zeros(3, dtype=torch.int64), 1, 0, 0, 3, 1.0)  # fmt: skip
    assert torch.equal(nxt.sort(-1).values, torch.tensor([[1, 3, 4]] * 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_arguments_are_rejected(backend, monkeypatch):
    monkeypatch.setenv("AION_FAST_BACKEND", backend)
    logits, positions, object_ids, sample_ids = _random_step_inputs(2, 2, 5, 4, seed=2)
    kwargs = {"seed": 0, "step": 0, "next_step": 1, "next_count": 1}
    with pytest.raises(ValueError, match="top_p"):
        roar_step(logits, positions, *_state(2, 4), object_ids, sample_ids, top_p=1.5, **kwargs)
    with pytest.raises(ValueError, match="temperature"):
        roar_step(logits, positions, *_state(2, 4), object_ids, sample_ids, temperature=-1.0, **kwargs)
    with pytest.raises(ValueError, match="next_count"):
        roar_step(logits, positions, *_state(2, 4), object_ids, sample_ids, **{**kwargs, "next_count": 3})
    with pytest.raises(ValueError, match="distinct"):
        roar_step(logits, torch.tensor([[1, 1], [0, 2]]), *_state(2, 4), object_ids, sample_ids, **kwargs)
    nan_logits = logits.clone()
    nan_logits[1, 0, 3] = float("nan")
    state = _state(2, 4)
    with pytest.raises(ValueError, match="NaN"):
        roar_step(nan_logits, positions, *state, object_ids, sample_ids, **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_matches_cpu_bit_for_bit():
    ext = dispatch.load_extension()
    if ext is None or not ext.roar_has_cuda():
        pytest.skip("aion_fast._C was built without CUDA sources")
    for temperature, top_k, top_p in [(1.0, 0, 0.0), (0.8, 7, 0.9), (0.0, 0, 0.0)]:
        logits, positions, object_ids, sample_ids = _random_step_inputs(64, 7, 1025, 23, seed=7)
        cpu_state, gpu_state = _state(64, 23), tuple(t.cuda() for t in _state(64, 23))
        args = {"seed": 42, "step": 2, "next_step": 3, "next_count": 5, "temperature": temperature, "top_k": top_k,
                "top_p": top_p}  # fmt: skip
        cpu_next = roar_step(logits, positions, *cpu_state, object_ids, sample_ids, **args)
        gpu_next = roar_step(logits.cuda(), positions.cuda(), *gpu_state, object_ids.cuda(), sample_ids.cuda(), **args)
        for a, b in zip((*cpu_state, cpu_next), (*gpu_state, gpu_next)):
            assert torch.equal(a, b.cpu())


@pytest.mark.skipif(NO_CPP_ROAR, reason="aion_fast._C lacks the ROAR op")
def test_registered_op_traces_under_torch_compile_and_matches_torch():
    """The C++ step is a torch.library custom op: a compiled step (seed >= 2^63 included) equals the reference."""
    rows, slots, vocab, length, next_count = 6, 3, 17, 11, 4
    logits, positions, object_ids, sample_ids = _random_step_inputs(rows, slots, vocab, length, seed=5)
    seed = 2**63 + 99

    def step(state):
        return roar_step(logits, positions, *state, object_ids, sample_ids, seed=seed, step=2, next_step=3,
                         next_count=next_count, temperature=0.8, top_k=6, top_p=0.9)  # fmt: skip

    compiled_state, eager_state = _state(rows, length), _state(rows, length)
    compiled_next = torch.compile(step, backend="aot_eager", fullgraph=True)(compiled_state)
    eager_next = torch_roar_step(logits, positions, *eager_state, object_ids, sample_ids, seed, 2, 3, next_count,
                                 0.8, 6, 0.9)  # fmt: skip
    assert torch.equal(compiled_next, eager_next)
    for ours, ref in zip(compiled_state, eager_state):
        assert torch.equal(ours, ref)
    torch.library.opcheck(
        torch.ops.aion_fast.roar_step_ext.default,
        (logits, positions, *_state(rows, length), object_ids, sample_ids, 99, 2, 3, next_count, 0.8, 6, 0.9),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_cuda_scratch_plan_is_bounded_for_any_vocabulary():
    """The CUDA step's scratch: at most the budget (or one sample / one row), chunks never larger than the work."""
    budget = roar.CUDA_SCRATCH_BYTES
    nbytes, samples, rows = roar.cuda_scratch_plan(samples=64 * 7, rows=64, vocab=1025, length=23)
    assert (samples, rows) == (64 * 7, 64) and nbytes == max(64 * 7 * 20 * 1025, 64 * 12 * 23)
    nbytes, samples, rows = roar.cuda_scratch_plan(samples=300_000, rows=50_000, vocab=50_257, length=4096)
    assert nbytes <= budget and samples == budget // (20 * 50_257) and rows == budget // (12 * 4096)
    nbytes, samples, rows = roar.cuda_scratch_plan(samples=10, rows=10, vocab=2**30, length=16)
    assert samples == 1 and nbytes == 20 * 2**30  # one sample per launch: bounded by the vocabulary itself


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_chunked_scratch_matches_cpu(monkeypatch):
    """A scratch budget of a few samples forces many launches per step: same tokens as the CPU kernel."""
    ext = dispatch.load_extension()
    if ext is None or not ext.roar_has_cuda():
        pytest.skip("aion_fast._C was built without CUDA sources")
    monkeypatch.setattr(roar, "CUDA_SCRATCH_BYTES", 3 * 20 * 1025)
    logits, positions, object_ids, sample_ids = _random_step_inputs(64, 7, 1025, 23, seed=3)
    cpu_state, gpu_state = _state(64, 23), tuple(t.cuda() for t in _state(64, 23))
    args = {"seed": 5, "step": 1, "next_step": 2, "next_count": 5, "temperature": 0.9, "top_k": 0, "top_p": 0.95}
    cpu_next = roar_step(logits, positions, *cpu_state, object_ids, sample_ids, **args)
    gpu_next = roar_step(logits.cuda(), positions.cuda(), *gpu_state, object_ids.cuda(), sample_ids.cuda(), **args)
    for a, b in zip((*cpu_state, cpu_next), (*gpu_state, gpu_next), strict=True):
        assert torch.equal(a, b.cpu())
