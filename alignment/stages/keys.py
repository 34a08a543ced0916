"""How a stage's cache key is made: its inputs, hashed with the code version that produced its output."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# bump when a stage's output for the same inputs changes (2: the instruction task has checkable questions and
# held-out phrasings; on-policy pairs are scored on correctness and never choose a degenerate sample; 3: other
# checkable questions, the echo and number-word rules of the review; 4: an on-policy answer cut off at the token
# limit is never the chosen one; 5: a preference stage records the reference it was held to, the on-policy report
# the median length of its samples)
CODE_VERSION = "5"


def stage_key(*parts: Any) -> str:
    """Content key of a stage: its config section, its inputs' fingerprints and the code version."""
    blob = json.dumps([CODE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
