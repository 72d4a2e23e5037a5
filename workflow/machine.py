"""The state machine of a definition version, driven by the ``transitions`` library.

One :class:`CaseMachine` is built per definition version (by the registry, once) and reused for
every case: the case is represented by a light token carrying its ``state``; firing an event
runs the library's own source-state check, then our condition, which asks the engine for the
reasons to refuse. A refusal is never a bare ``False``: the reasons travel back to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine, MachineError

from workflow.definition import Definition
from workflow.errors import TransitionNotAvailable

logging.getLogger("transitions").addHandler(logging.NullHandler())


@dataclass
class CaseToken:
    """What the machine sees of a case: its state, and the reasons of the last refusal."""

    state: str
    refusals: list[Any] = field(default_factory=list)


def _check(event_data: Any) -> bool:
    token: CaseToken = event_data.model
    token.refusals = list(event_data.kwargs["check"]())
    return not token.refusals


class CaseMachine:
    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        self._machine = Machine(
            model=None,
            states=list(definition.states),
            transitions=[
                {
                    "trigger": t.key,
                    "source": list(t.sources),
                    "dest": t.dest,
                    "conditions": [_check],
                }
                for t in definition.transitions.values()
            ],
            initial=definition.initial_state.key,
            auto_transitions=False,
            send_event=True,
        )

    def fire(self, token: CaseToken, key: str, check: Callable[[], list[Any]]) -> bool:
        """Fire transition ``key`` on ``token``; False (with ``token.refusals``) if refused.

        Raises:
            TransitionNotAvailable: the transition does not leave the token's current state.
        """
        event = self._machine.events.get(key)
        if event is None:
            raise TransitionNotAvailable(
                f"unknown transition {key!r}", transition=key, state=token.state, allowed=[]
            )
        try:
            return bool(event.trigger(token, check=check))
        except MachineError:
            allowed = [t.key for t in self.definition.transitions_from(token.state)]
            raise TransitionNotAvailable(
                f"transition {key!r} does not leave state {token.state!r}",
                transition=key,
                state=token.state,
                allowed=allowed,
            ) from None

    def may_leave(self, state: str, key: str) -> bool:
        event = self._machine.events.get(key)
        return event is not None and state in event.transitions
