"""ROAR schedule: rho_t = max(1, floor(r^t |Q_t|)) for t = 1, 2, ... (AION-1 paper §7.1), and explicit schedules."""

from __future__ import annotations

import math

import pytest

from aion_fast.generate.roar import check_schedule, roar_schedule


def _by_hand(num_positions: int, decay: float) -> list[int]:
    counts, unknown, t = [], num_positions, 1
    while unknown:
        counts.append(min(unknown, max(1, math.floor(decay**t * unknown))))
        unknown -= counts[-1]
        t += 1
    return counts


@pytest.mark.parametrize(
    ("num_positions", "decay", "expected"),
    [
        (1, 0.9, [1]),
        (1, 0.0, [1]),
        (273, 0.9, [245, 22, 4, 1, 1]),  # floor(.9*273)=245; floor(.81*28)=22; floor(.729*6)=4; 1; 1
        (576, 0.9, [518, 46, 8, 2, 1, 1]),
        (273, 0.99, [270, 2, 1]),
        (576, 0.95, [547, 26, 2, 1]),
    ],
)
def test_schedule_counts_follow_the_formula(num_positions, decay, expected):
    counts = roar_schedule(num_positions, decay)
    assert counts == expected == _by_hand(num_positions, decay)
    assert sum(counts) == num_positions  # every position revealed exactly once
    assert len(counts) == len(expected)  # decoder calls


@pytest.mark.parametrize("num_positions", [1, 273, 576])
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.8, 0.97])
def test_schedule_invariants(num_positions, decay):
    counts = roar_schedule(num_positions, decay)
    assert counts == _by_hand(num_positions, decay)
    assert sum(counts) == num_positions and min(counts) >= 1
    if decay == 0.0:
        assert counts == [1] * num_positions  # r = 0: one token per decoder call


def test_max_steps_reveals_the_rest_at_the_last_step():
    assert roar_schedule(576, 0.5, max_steps=3) == [288, 72, 216]
    assert roar_schedule(273, 0.9, max_steps=1) == [273]
    assert roar_schedule(273, 0.9, max_steps=50) == roar_schedule(273, 0.9)


def test_explicit_schedule_is_validated():
    assert check_schedule([200, 73], 273) == [200, 73]
    with pytest.raises(ValueError, match="sum"):
        check_schedule([200, 72], 273)
    with pytest.raises(ValueError, match="positive integers"):
        check_schedule([273, 0], 273)
    with pytest.raises(ValueError, match="positive integers"):
        check_schedule([], 273)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_decay_outside_unit_interval_is_rejected(decay):
    with pytest.raises(ValueError, match="decay"):
        roar_schedule(273, decay)
