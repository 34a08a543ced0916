"""Streaming reads, provenance, max_rows, SFT from preference rows, the streaming writer and split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alignment.data import (
    DataValidationError,
    DropReport,
    JsonlWriter,
    fingerprint,
    is_heldout,
    iter_preferences,
    load_preferences,
    load_sft,
    split_by_hash,
)


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]


def test_iter_preferences_streams_and_fills_the_report(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [*pairs(3), {"prompt": "x", "chosen": "y"}])
    report = DropReport()
    stream = iter_preferences(str(path), policy="drop", report=report)
    first = next(stream)
    assert first["source"] == str(path) and first["row_index"] == 0 and report.rows_read == 1
    rest = list(stream)
    assert len(rest) == 2 and report.rows_kept == 3 and report.counts == {"missing_field": 1}
    assert report.formats == {str(path): "standard"}
    assert report.to_dict()["formats"] == {str(path): "standard"}


def test_strict_stream_raises_after_the_last_row(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "y"}, *pairs(2)])
    seen = []
    with pytest.raises(DataValidationError) as caught:
        for record in iter_preferences(str(path)):
            seen.append(record)
    assert len(seen) == 2 and caught.value.total == 1 and caught.value.row == 0


def test_max_rows_stops_reading(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", pairs(3))
    write_lines(tmp_path / "b.jsonl", pairs(5)[3:])
    records, report = load_preferences(str(tmp_path), max_rows=4)
    assert [r["source"] for r in records] == ["a.jsonl"] * 3 + ["b.jsonl"] and report.rows_read == 4
    with pytest.raises(ValueError, match="max_rows"):
        load_preferences(str(tmp_path), max_rows=0)


def test_sft_from_hh_preference_rows_keeps_every_turn(tmp_path: Path) -> None:
    history = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more"
    path = write_lines(tmp_path / "hh.jsonl", [{"chosen": history + "\n\nAssistant: yes",
                                                "rejected": history + "\n\nAssistant: no"}])
    (record,), report = load_sft(str(path))
    assert [m["content"] for m in record["messages"]] == ["hi", "hello", "more", "yes"]
    assert report.formats == {str(path): "sft_chosen"}


def test_writer_fingerprint_matches_file_and_failure_leaves_nothing(tmp_path: Path) -> None:
    records = pairs(5)
    with JsonlWriter(tmp_path / "out.jsonl") as writer:
        for r in records:
            writer.write(r)
    assert writer.count == 5
    assert writer.fingerprint == fingerprint(records) == hashlib.sha256((tmp_path / "out.jsonl").read_bytes()).hexdigest()
    with pytest.raises(RuntimeError, match="stop"), JsonlWriter(tmp_path / "bad.jsonl") as writer:
        writer.write(records[0])
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_is_heldout_agrees_with_split_by_hash() -> None:
    records = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [], "rejected": []} for i in range(200)]
    train, heldout = split_by_hash(records, 0.3, "7")
    assert [r for r in records if is_heldout(r, 0.3, "7")] == heldout
    assert 30 < len(heldout) < 90 and len(train) + len(heldout) == 200
