"""The trainer's hold (``KADAPT_HOLD_AFTER_STEP``): tests stop a run at a known step, not a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadapt_trainer import hold
from kadapt_trainer.hold import HOLD_AFTER_STEP_ENV, HOLD_RELEASE_FILE_ENV, hold_after_step


class CountingStop:
    """A stop flag that turns True on its ``after``-th check: proves the hold waited for it."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.checks = 0

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks >= self.after


@pytest.fixture(autouse=True)
def no_poll_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hold, "_POLL_SECONDS", 0.0)
    monkeypatch.delenv(HOLD_AFTER_STEP_ENV, raising=False)
    monkeypatch.delenv(HOLD_RELEASE_FILE_ENV, raising=False)


def test_unset_never_holds() -> None:
    stop = CountingStop(after=1)
    assert not hold_after_step(3, stop, is_main=True)
    assert stop.checks == 0


def test_holds_only_at_the_named_step_until_the_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(HOLD_AFTER_STEP_ENV, "5")
    assert not hold_after_step(4, CountingStop(after=1), is_main=True)
    stop = CountingStop(after=4)
    assert hold_after_step(5, stop, is_main=True)
    assert stop.checks == 4  # it kept waiting until the stop arrived
    assert "kadapt: holding after step 5 (KADAPT_HOLD_AFTER_STEP) until a stop signal" in capsys.readouterr().out
    assert not hold_after_step(6, CountingStop(after=1), is_main=True)


def test_the_release_file_ends_the_hold_and_only_rank0_prints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = tmp_path / "release"
    release.touch()
    monkeypatch.setenv(HOLD_AFTER_STEP_ENV, "2")
    monkeypatch.setenv(HOLD_RELEASE_FILE_ENV, str(release))
    never = CountingStop(after=10**9)
    assert hold_after_step(2, never, is_main=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(HOLD_AFTER_STEP_ENV, value)
    with pytest.raises(ValueError, match=r"KADAPT_HOLD_AFTER_STEP=.*whole number >= 1"):
        hold_after_step(1, CountingStop(after=1), is_main=True)
