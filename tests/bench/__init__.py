"""Tests of the benchmark harness (bench/). TRL is the optional `bench` extra: without it the TRL tests skip
with a reason, or fail when ALIGNFLOW_REQUIRE_BENCH=1 (set it where TRL must be present, e.g. in CI)."""

from __future__ import annotations

import importlib.util
import os

import pytest


def require_trl(module_level: bool = False) -> None:
    if importlib.util.find_spec("trl") is not None:
        return
    message = "TRL is not installed (the `bench` extra: pip install -e '.[bench]')"
    if os.environ.get("ALIGNFLOW_REQUIRE_BENCH") == "1":
        pytest.fail(f"{message}, and ALIGNFLOW_REQUIRE_BENCH=1 requires it", pytrace=False)
    pytest.skip(message, allow_module_level=module_level)
