"""The local stack's start-up refuses a port where something it did not start already answers (issue: a soak
stack's arena met the user's `make demo` arena on the default port and ran without its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.stack import Ports, Service, Stack, StackError, free_ports


def test_up_refuses_a_service_that_answers_on_its_port_but_was_not_started_by_it(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    stack = Stack(tmp_path, Ports(arena=free_ports(1)[0]))
    other = Service("arena", ["true"], {}, healthy=lambda: True)  # another stack's arena answering
    monkeypatch.setattr(Stack, "services", lambda self: [other])
    with pytest.raises(StackError, match=r"arena: http://127\.0\.0\.1:\d+ already answers, but not from this stack"):
        stack.up(echo=lambda _: None)
    assert stack.read_state()["services"] == {}  # nothing recorded as this stack's
