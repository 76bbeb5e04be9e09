"""The fault injector (`tests.emulators.faults`) as a regression test of the wire layer: each fault whose outcome
does not hang on timing (not the slow "split" and "trickle" replies), played at a driver session's first message
and at its middle one, over TCP and a pty, leaves no problem by the project's rule (a one-line hil error naming the
instrument, the instrument in its safe state, the link in step or known not to be, nothing believed wrongly)."""

import functools

import pytest

from tests.emulators import faults

DRIVERS = ("keithley2450", "keysight33500b")
KINDS = tuple(kind for kind in faults.FAULTS if kind not in ("split", "trickle"))


@functools.cache
def messages_of(driver: str) -> int:
    return faults.count_messages(driver)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("via", ["tcp", "pty"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_fault_at_the_first_and_the_middle_message_leaves_no_problem(driver: str, via: str, kind: str) -> None:
    for at in (0, messages_of(driver) // 2):
        outcome = faults.session(driver, via, kind, at, seed=at)
        assert outcome.fired is not None and outcome.fired.startswith(kind), outcome  # the fault was played
        assert not outcome.hung and outcome.problems == [], outcome
        if kind != "error" or at > 0:  # an error queued at the identity query is cleared as the driver connects
            assert outcome.error is not None, outcome
