"""Decided arena votes as an ordinary preference dataset: one conversational row per left/right vote
(`prompt`, `chosen`, `rejected` as message lists, the format alignment/data loads) plus provenance columns
(`arena_*`, which the loader ignores). Ties and "both bad" never become pairs: they are counted. A vote between
two identical answers is counted too (the loader refuses a pair whose answers are equal).

"Both bad" votes and single-answer ratings are unpaired feedback: `unpaired_rows` turns a "both bad" vote into
undesirable examples, one per distinct answer, and a rating into one example, desirable when rated good
(`prompt`, `completion`, `label`, TRL's unpaired format, which `data.unpaired_path` loads), which KTO learns
from (`preference.method=kto`). A rating is about one answer, so it replaces what a "both bad" vote said of
that answer. Ties say nothing about either answer and stay counted only."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any


def preference_rows(decided: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(rows, counts): counts has votes, pairs, ties, both_bad, identical (skipped)."""
    rows: list[dict[str, Any]] = []
    counts = {"votes": 0, "pairs": 0, "ties": 0, "both_bad": 0, "identical": 0}
    for v in decided:
        counts["votes"] += 1
        if v["choice"] == "tie":
            counts["ties"] += 1
            continue
        if v["choice"] == "both_bad":
            counts["both_bad"] += 1
            continue
        sides = {"left": v["left_answer"], "right": v["right_answer"]}
        chosen, rejected = sides[v["choice"]], sides["right" if v["choice"] == "left" else "left"]
        if chosen.strip() == rejected.strip():
            counts["identical"] += 1
            continue
        counts["pairs"] += 1
        rows.append({
            "prompt": list(v["prompt"]),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "arena_chosen_model": v["winner_model"],
            "arena_rejected_model": v["loser_model"],
            **provenance(v),
        })
    return rows, counts


def unpaired_rows(decided: Iterable[Mapping[str, Any]],
                  rated: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The "both bad" votes as undesirable examples (each distinct answer of such a vote, with the prompt and
    the vote's provenance; `arena_model`: the version that gave the answer), then the ratings (`store.rated()`)
    as desirable (good) or undesirable (bad) examples; an answer rated on its own is left out of its
    "both bad" vote's rows. Empty answers are skipped."""
    rated = list(rated)
    own = {(r["comparison_id"], r["answer"].strip()) for r in rated}  # by text: both sides may say the same
    rows: list[dict[str, Any]] = []
    for v in decided:
        if v["choice"] != "both_bad":
            continue
        answers: dict[str, str] = {}
        for side in ("left", "right"):
            if (v["comparison_id"], v[f"{side}_answer"].strip()) not in own:
                answers[v[f"{side}_answer"].strip()] = v[f"{side}_model"]
        for answer, model in answers.items():
            if not answer:
                continue
            rows.append({
                "prompt": list(v["prompt"]),
                "completion": [{"role": "assistant", "content": answer}],
                "label": False,
                "arena_model": model,
                **provenance(v),
            })
    for r in rated:
        if not r["answer"].strip():
            continue
        rows.append({
            "prompt": list(r["prompt"]),
            "completion": [{"role": "assistant", "content": r["answer"].strip()}],
            "label": r["rating"] == "good",
            "arena_model": r["model"],
            "arena_rating": r["rating"],
            **provenance({**r, "voted_at": r["rated_at"], "note": None}),
        })
    return rows


def provenance(v: Mapping[str, Any]) -> dict[str, Any]:
    """The vote's `arena_*` columns every exported row carries (the loader ignores them)."""
    return {"arena_comparison_id": v["comparison_id"], "arena_annotator": v["annotator"],
            "arena_voted_at": v["voted_at"], "arena_note": v["note"] or "", "arena_prompt_source": v["prompt_source"],
            "arena_sampling": json.dumps(v["settings"], sort_keys=True)}


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
