"""XLA_FLAGS per kind: the sampling kinds skip XLA's GPU autotuning unless the user chose a level."""

from __future__ import annotations

import pytest

from lfads.flags import KINDS
from lfads.xla_flags import SAMPLING_KINDS, xla_flags_for


@pytest.mark.parametrize("kind", SAMPLING_KINDS)
def test_sampling_kinds_turn_autotuning_off_and_keep_the_users_flags(kind: str) -> None:
    assert xla_flags_for(kind, "") == "--xla_gpu_autotune_level=0"
    assert xla_flags_for(kind, "--xla_dump_to=/tmp/d") == "--xla_dump_to=/tmp/d --xla_gpu_autotune_level=0"


@pytest.mark.parametrize("kind", SAMPLING_KINDS)
def test_a_level_the_user_chose_is_left_alone(kind: str) -> None:
    assert xla_flags_for(kind, "--xla_gpu_autotune_level=4") == "--xla_gpu_autotune_level=4"


@pytest.mark.parametrize("kind", sorted(set(KINDS) - set(SAMPLING_KINDS)))
def test_training_kinds_keep_autotuning(kind: str) -> None:
    assert xla_flags_for(kind, "") == ""
    assert xla_flags_for(kind, "--xla_dump_to=/tmp/d") == "--xla_dump_to=/tmp/d"


def test_every_sampling_kind_is_a_kind() -> None:
    assert set(SAMPLING_KINDS) < set(KINDS)
