"""A worker killed right after its side effect: the re-delivery tests' one way to lose a worker mid-action.

:func:`execute_killed` runs ``work(ctx)`` (a verb's ``execute``) in a forked process whose context SIGKILLs
the process the moment a ``ctx.log`` line or a ``ctx.executed`` summary contains ``at``: the statement or
job that line reports has been sent, nothing after it runs (no ``finally``, no outcome), as when the host
of a worker dies. The test then executes again with the same action id, as the re-delivered task would.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import ExecutionContext, Plan


def execute_killed(
    action_id: str, plan: Plan | None, work: Callable[[ExecutionContext], Any], *, at: str, timeout_s: float = 120
) -> None:
    """Run ``work`` in a forked child killed by SIGKILL at the first log line or executed summary holding
    ``at``; fails the test when the child ends any other way (it never reached the moment, or it hung)."""

    def die_at(line: str) -> None:
        if at in line:
            os.kill(os.getpid(), signal.SIGKILL)

    def child() -> None:
        context = ExecutionContext(action_id=action_id, plan=plan, log=die_at)
        context.executed = lambda summary, details=None: die_at(summary)
        work(context)

    process = multiprocessing.get_context("fork").Process(target=child, name=f"killed-{action_id}")
    process.start()
    process.join(timeout_s)
    if process.exitcode is None:
        process.kill()
        process.join(10)
        pytest.fail(f"the worker of {action_id} did not reach {at!r} within {timeout_s:.0f} s")
    if process.exitcode != -signal.SIGKILL:
        pytest.fail(f"the worker of {action_id} ended with exit code {process.exitcode} before reaching {at!r}")


def redelivery(action_id: str, plan: Plan | None) -> ExecutionContext:
    """The context of the re-delivered task: the same action id and plan, attempt 2."""
    return ExecutionContext(action_id=action_id, plan=plan, attempt=2)
