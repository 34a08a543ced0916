"""Load, validate, canonicalise, de-duplicate and split alignment data sets.

Canonical records are plain JSON-serialisable dicts:

* preference: ``{"prompt": [msg, ...], "chosen": [msg, ...], "rejected": [msg, ...],
  "source": str, "row_index": int}``; the prompt ends with a user message, chosen and
  rejected hold assistant messages (normally exactly one);
* SFT: ``{"messages": [msg, ...], "source": str, "row_index": int}`` ending with an
  assistant message;
* unpaired (KTO's examples): ``{"prompt": [msg, ...], "completion": [msg, ...], "label": bool, "source": str,
  "row_index": int}``, label true for a desirable answer;

where ``msg = {"role": "system" | "user" | "assistant", "content": str}``.

Row numbers are 0-based everywhere: ``row_index`` and "row 3" in an error both mean the
fourth data row of the file (for JSON Lines the line index, blank lines included; for CSV
the fourth row after the header). Problems with a whole file or source (missing, unreadable,
no CSV header, not parquet) raise :class:`DataError` under both policies.

Sources are local files or folders (``.jsonl``, ``.json``, ``.parquet``, ``.csv``), Hugging Face
Hub ids (``owner/name`` or ``hf://owner/name``, with a subset and split) and ``s3://bucket/key``
URIs (an object or a prefix; downloaded to a local cache by :mod:`storage.s3`). Reading
streams: :func:`iter_preferences` / :func:`iter_sft` yield records one by one, holding only a
16-byte hash per kept row for de-duplication.

The package's modules follow the steps a row goes through; import from the package itself (this module),
which is the one public surface:

* :mod:`~alignment.data.errors` — record types, reason codes, :class:`DataError`, :class:`DropReport`;
* :mod:`~alignment.data.readers` — rows out of files, folders, hub data sets and s3:// URIs;
* :mod:`~alignment.data.fields` — parsing one field: texts, messages, message lists;
* :mod:`~alignment.data.formats` — the formats, their detection and canonicalisation of one row;
* :mod:`~alignment.data.loading` — streaming a whole source with drop accounting and de-duplication;
* :mod:`~alignment.data.splits` — the held-out split, fingerprints and canonical JSON Lines output.
"""

from alignment.data.errors import (
    BAD_ENCODING,
    BAD_FILE,
    BAD_JSON,
    BAD_ROLE,
    DUPLICATE,
    EMPTY_TEXT,
    FILTER_REASONS,
    IDENTICAL_PAIR,
    MAX_EXAMPLES,
    MAX_STRICT_ERRORS,
    MISSING_FIELD,
    PROMPT_MISMATCH,
    REASONS,
    SCORE_GAP,
    TOO_LONG,
    WRONG_TYPE,
    DataError,
    DataValidationError,
    DropReport,
    Message,
    Pair,
    Policy,
    Record,
)
from alignment.data.fields import ROLES
from alignment.data.formats import (
    AUTO,
    CONVERSATIONAL,
    HH,
    IMPLICIT,
    PREFERENCE_FORMATS,
    SFT_CHOSEN,
    SFT_FORMATS,
    SFT_MESSAGES,
    SFT_PROMPT_COMPLETION,
    STANDARD,
    ULTRAFEEDBACK,
    UNPAIRED,
    canonicalize_preference,
    canonicalize_sft,
    canonicalize_unpaired,
    detect_format,
)
from alignment.data.loading import iter_preferences, iter_sft, iter_unpaired, load_preferences, load_sft
from alignment.data.readers import KNOWN_COLUMNS, SUPPORTED_SUFFIXES, load_hub_rows, read_rows
from alignment.data.splits import JsonlWriter, fingerprint, is_heldout, read_jsonl, split_by_hash, write_jsonl

__all__ = [
    "AUTO", "BAD_ENCODING", "BAD_FILE", "BAD_JSON", "BAD_ROLE", "CONVERSATIONAL", "DUPLICATE", "EMPTY_TEXT",
    "FILTER_REASONS", "HH", "IDENTICAL_PAIR", "IMPLICIT", "KNOWN_COLUMNS", "MAX_EXAMPLES", "MAX_STRICT_ERRORS",
    "MISSING_FIELD", "PREFERENCE_FORMATS", "PROMPT_MISMATCH", "REASONS", "ROLES", "SCORE_GAP", "SFT_CHOSEN",
    "SFT_FORMATS", "SFT_MESSAGES", "SFT_PROMPT_COMPLETION", "STANDARD", "SUPPORTED_SUFFIXES", "TOO_LONG",
    "ULTRAFEEDBACK", "UNPAIRED", "WRONG_TYPE", "DataError", "DataValidationError", "DropReport", "JsonlWriter", "Message",
    "Pair", "Policy", "Record", "canonicalize_preference", "canonicalize_sft", "canonicalize_unpaired", "detect_format", "fingerprint",
    "is_heldout", "iter_preferences", "iter_sft", "iter_unpaired", "load_hub_rows", "load_preferences", "load_sft", "read_jsonl", "read_rows",
    "split_by_hash", "write_jsonl",
]
