"""alignment.data.prepare: canonical files from every format, the tokenized cache (parity with
alignment.data.tokenization, too_long under both policies, reuse), the report and the run-input description."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from alignment.data import DataError, DataValidationError
from alignment.data.prepare import (
    PrepareOptions,
    describe_prepared,
    load_tokenized_rows,
    prepare,
    tokenize_prepared,
    write_canonical,
)
from alignment.data.tokenization import encode_pairs, encode_sft

USER = {"role": "user", "content": "What is 2 + 2?"}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(n: int, long_every: int = 0) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        chosen = f"The cow number {i} says moo." + (" moo" * 40 if long_every and i % long_every == 0 else "")
        rows.append({"prompt": f"What does cow {i} say?", "chosen": chosen, "rejected": "Sorry, I do not know."})
    return rows


def same_pair_in_every_format(folder: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    hh = {"chosen": "\n\nHuman: What is 2 + 2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2 + 2?\n\nAssistant: 5"}
    ultra = {"prompt": USER["content"], "chosen": [USER, GOOD], "rejected": [USER, BAD], "score_chosen": 9.0,
             "score_rejected": 2.0}
    (folder / "implicit.json").write_text(json.dumps([{"chosen": [USER, GOOD], "rejected": [USER, BAD]}]))
    (folder / "standard.csv").write_text("prompt,chosen,rejected\nWhat is 2 + 2?,4,5\n")
    pq.write_table(pa.Table.from_pylist([ultra]), folder / "ultra.parquet")
    return {
        "standard": write_lines(folder / "standard.jsonl", [{"prompt": USER["content"], "chosen": "4", "rejected": "5"}]),
        "standard_csv": folder / "standard.csv",
        "conversational": write_lines(folder / "conv.jsonl", [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}]),
        "implicit": folder / "implicit.json",
        "hh": write_lines(folder / "hh.jsonl", [hh]),
        "ultrafeedback": folder / "ultra.parquet",
    }


def test_every_format_gives_the_same_canonical_file(tmp_path: Path) -> None:
    bodies = set()
    for name, path in same_pair_in_every_format(tmp_path / "in").items():
        out = write_canonical({"train": str(path)}, tmp_path / name, PrepareOptions(heldout_fraction=0.0))
        (record,) = [json.loads(line) for line in out.path("train").read_text().splitlines()]
        assert record.pop("source") == str(path) and record.pop("row_index") == 0
        bodies.add(json.dumps(record, sort_keys=True))
        assert out.counts == {"train": 1}
    assert bodies == {json.dumps({"chosen": [GOOD], "prompt": [USER], "rejected": [BAD]}, sort_keys=True)}


def test_prepare_without_tokenizer_writes_files_report_and_plot(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.jsonl", [*pairs(60), pairs(1)[0], {"prompt": "x", "chosen": "y"}])
    sft = write_lines(tmp_path / "sft.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pairs(10)])
    result = prepare({"sft": str(sft), "train": str(train)}, tmp_path / "out",
                     PrepareOptions(policy="drop", heldout_fraction=0.25, seed_salt="0"))
    assert result.counts["sft"] == 10 and result.counts["train"] + result.counts["heldout"] == 60
    assert 5 <= result.counts["heldout"] <= 25
    for split in ("sft", "train", "heldout"):
        assert result.fingerprints[split] == hashlib.sha256(result.path(split).read_bytes()).hexdigest()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == result.report
    assert report["drops"]["train"]["counts"] == {"duplicate": 1, "missing_field": 1}
    assert report["drops"]["train"]["formats"] == {str(train): "standard"}
    assert "heldout" not in report["drops"]  # split off from train: counted there
    assert report["length_unit"] == "characters" and report["lengths"]["prompt"]["max"] == len("What does cow 59 say?")
    assert set(report["lengths"]) == {"prompt", "chosen", "rejected", "sft"}
    assert (tmp_path / "out" / "lengths.png").read_bytes().startswith(b"\x89PNG")
    assert {d["name"]: d["rows"] for d in describe_prepared(tmp_path / "out")} == result.counts


def test_strict_failure_leaves_no_files_and_empty_splits_are_errors(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.jsonl", [*pairs(3), {"prompt": "x", "chosen": "y"}])
    with pytest.raises(DataValidationError):
        prepare({"train": str(train)}, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any(p.suffix == ".jsonl" for p in (tmp_path / "out").iterdir())
    with pytest.raises(DataError, match=r"held-out split is empty: heldout_fraction=0.01 of 1 training rows"):  # issue 15.6
        prepare({"train": str(write_lines(tmp_path / "one.jsonl", pairs(1)))}, tmp_path / "out2",
                PrepareOptions(heldout_fraction=0.01))


def test_tokenized_cache_matches_tokenization_module(tmp_path: Path, quick_tokenizer: Any) -> None:
    train = write_lines(tmp_path / "train.jsonl", pairs(40, long_every=7))
    sft = write_lines(tmp_path / "sft.jsonl", [{"messages": [USER, GOOD, {"role": "user", "content": "and 3 + 3?"},
                                                             {"role": "assistant", "content": "6" * 300}]}])
    options = PrepareOptions(heldout_fraction=0.2, max_prompt_tokens=8, max_response_tokens=12)
    result = prepare({"sft": str(sft), "train": str(train)}, tmp_path / "out", options, quick_tokenizer)
    assert result.report["length_unit"] == "tokens" and result.tokenized_dir
    for split in ("train", "heldout"):
        canonical = [json.loads(line) for line in result.path(split).read_text().splitlines()]
        expected = encode_pairs(quick_tokenizer, canonical, max_prompt_tokens=8, max_response_tokens=12)
        rows = load_tokenized_rows(Path(result.tokenized_dir) / split)
        assert [r["prompt_ids"] for r in rows] == expected["prompt_ids"]
        assert [r["chosen_ids"] for r in rows] == expected["chosen_ids"]
        assert [r["rejected_ids"] for r in rows] == expected["rejected_ids"]
    sft_rows = load_tokenized_rows(Path(result.tokenized_dir) / "sft")
    expected = encode_sft(quick_tokenizer, [json.loads(result.path("sft").read_text())], max_tokens=20)
    assert [r["input_ids"] for r in sft_rows] == expected["input_ids"]
    assert [r["labels"] for r in sft_rows] == expected["labels"]
    info = result.report["tokenized"]["splits"]
    assert info["train"]["truncated"]["prompt"] == info["train"]["rows"]  # every prompt is over 8 tokens
    assert result.report["lengths"]["prompt"]["min"] > 8  # lengths are before truncation


def test_too_long_rows_are_dropped_or_fail_by_policy(tmp_path: Path, quick_tokenizer: Any) -> None:
    train = write_lines(tmp_path / "train.jsonl", pairs(40, long_every=4))
    drop = PrepareOptions(policy="drop", heldout_fraction=0.2, max_prompt_tokens=64, max_response_tokens=24,
                          truncation="reject")
    result = prepare({"train": str(train)}, tmp_path / "drop", drop, quick_tokenizer)
    drops = result.report["tokenized"]["drops"]
    dropped = drops["train"]["counts"].get("too_long", 0) + drops["heldout"]["counts"].get("too_long", 0)
    assert dropped == 10
    assert result.counts["train"] + result.counts["heldout"] == 40  # canonical files keep them
    example = (drops["train"]["examples"].get("too_long") or drops["heldout"]["examples"]["too_long"])[0]
    assert example["field"] == "chosen" and "limit 24" in example["message"] and example["file"] == str(train)
    rows = sum(result.report["tokenized"]["splits"][s]["rows"] for s in ("train", "heldout"))
    assert rows == 30
    with pytest.raises(DataValidationError) as caught:
        prepare({"train": str(train)}, tmp_path / "strict", PrepareOptions(
            heldout_fraction=0.2, max_prompt_tokens=64, max_response_tokens=24, truncation="reject"), quick_tokenizer)
    assert caught.value.total == 10 and caught.value.reason == "too_long"
    assert "too_long" in str(caught.value) and "chosen has" in str(caught.value)


def test_tokenized_cache_is_reused(tmp_path: Path, quick_tokenizer: Any) -> None:
    train = write_lines(tmp_path / "train.jsonl", pairs(20))
    write_canonical({"train": str(train)}, tmp_path / "out")
    first = tokenize_prepared(tmp_path / "out", quick_tokenizer)
    manifest = Path(first.dir) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    second = tokenize_prepared(tmp_path / "out", quick_tokenizer)
    assert second == first and manifest.stat().st_mtime_ns == stamp
    third = tokenize_prepared(tmp_path / "out", quick_tokenizer, PrepareOptions(max_prompt_tokens=5))
    assert third.dir != first.dir
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_worker_processes_give_the_same_tokens(tmp_path: Path, quick_tokenizer: Any) -> None:
    train = write_lines(tmp_path / "train.jsonl", pairs(600))
    write_canonical({"train": str(train)}, tmp_path / "out")
    one = tokenize_prepared(tmp_path / "out", quick_tokenizer, PrepareOptions(num_proc=1))
    two = tokenize_prepared(tmp_path / "out", quick_tokenizer, PrepareOptions(num_proc=2, max_prompt_tokens=97))
    for split in ("train", "heldout"):
        a = load_tokenized_rows(Path(one.dir) / split)
        b = load_tokenized_rows(Path(two.dir) / split)
        assert [r["chosen_ids"] for r in a] == [r["chosen_ids"] for r in b]
