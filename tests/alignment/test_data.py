"""Tests for alignment.data: formats, sources, validation, de-duplication, splitting."""

from __future__ import annotations

import hashlib
import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest

from alignment import data
from alignment.data import (
    DataError,
    DataValidationError,
    DropReport,
    detect_format,
    fingerprint,
    load_preferences,
    load_sft,
    read_rows,
    split_by_hash,
    write_jsonl,
)

SYSTEM = "You are terse."
PROMPT = "What is 2 + 2?"
CHOSEN = "4"
REJECTED = "5"
USER = {"role": "user", "content": PROMPT}
GOOD = {"role": "assistant", "content": CHOSEN}
BAD = {"role": "assistant", "content": REJECTED}
EXPECTED = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def triple(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("prompt", "chosen", "rejected")}


def std_row(prompt: str = PROMPT, chosen: str = CHOSEN, rejected: str = REJECTED) -> dict[str, str]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# ---------------------------------------------------------------------------- formats


def format_files(tmp_path: Path) -> dict[str, Path]:
    """The same pair in every preference format, in a mix of file types."""
    hh = {
        "chosen": f"\n\nHuman: {PROMPT}\n\nAssistant: {CHOSEN}",
        "rejected": f"\n\nHuman: {PROMPT}\n\nAssistant: {REJECTED}",
    }
    ultra = {
        "prompt": PROMPT,
        "chosen": [USER, GOOD],
        "rejected": [USER, BAD],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }
    (tmp_path / "implicit.json").write_text(json.dumps([{"chosen": [USER, GOOD], "rejected": [USER, BAD]}]))
    return {
        "standard": write_lines(tmp_path / "standard.jsonl", [std_row()]),
        "conversational": write_lines(
            tmp_path / "conv.jsonl", [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}]
        ),
        "implicit": tmp_path / "implicit.json",
        "hh": write_parquet(tmp_path / "hh.parquet", [hh]),
        "ultrafeedback": write_parquet(tmp_path / "ultra.parquet", [ultra]),
    }


def test_every_preference_format_gives_the_same_record(tmp_path: Path) -> None:
    for fmt, path in format_files(tmp_path).items():
        records, report = load_preferences(str(path))
        assert [triple(r) for r in records] == [EXPECTED], fmt
        assert records[0]["source"] == str(path) and records[0]["row_index"] == 0
        assert next(read_rows(path))[0] == 0
        assert detect_format(next(read_rows(path))[1]) == fmt
        assert report.rows_read == report.rows_kept == 1


def test_csv_with_json_list_cells(tmp_path: Path) -> None:
    path = tmp_path / "conv.csv"
    path.write_text(
        'prompt,chosen,rejected\n"[{""role"": ""user"", ""content"": ""What is 2 + 2?""}]",'
        '"[{""role"": ""assistant"", ""content"": ""4""}]","[{""role"": ""assistant"", ""content"": ""5""}]"\n'
    )
    records, _ = load_preferences(str(path))
    assert [triple(r) for r in records] == [EXPECTED]


def test_system_prompt_in_every_format_that_has_one(tmp_path: Path) -> None:
    system = {"role": "system", "content": SYSTEM}
    write_lines(tmp_path / "a.jsonl", [{**std_row(), "system": SYSTEM}])
    write_lines(tmp_path / "b.jsonl", [{"prompt": [system, USER], "chosen": [GOOD], "rejected": [BAD]}])
    write_lines(tmp_path / "c.jsonl", [{"chosen": [system, USER, GOOD], "rejected": [system, USER, BAD]}])
    records, report = load_preferences(str(tmp_path), policy="drop")
    assert report.counts == {"duplicate": 2}
    assert triple(records[0]) == {**EXPECTED, "prompt": [system, USER]}


def test_multi_turn_hh_keeps_earlier_turns_and_matches_implicit(tmp_path: Path) -> None:
    history = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more"
    write_lines(
        tmp_path / "hh.jsonl",
        [{"chosen": history + "\n\nAssistant: answer", "rejected": history + "\n\nAssistant: no"}],
    )
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]
    (hh,), _ = load_preferences(str(tmp_path / "hh.jsonl"))
    assert hh["prompt"] == turns
    assert hh["chosen"] == [{"role": "assistant", "content": "answer"}]
    assert hh["rejected"] == [{"role": "assistant", "content": "no"}]
    implicit = {"chosen": [*turns, hh["chosen"][0]], "rejected": [*turns, hh["rejected"][0]]}
    assert data.canonicalize_preference(implicit) == triple(hh)
    assert detect_format(implicit) == "implicit"


def test_format_override_and_unknown_format(tmp_path: Path) -> None:
    transcript = "\n\nHuman: q\n\nAssistant: a"
    path = write_lines(tmp_path / "x.jsonl", [{"prompt": "p", "chosen": transcript, "rejected": "b"}])
    (record,), _ = load_preferences(str(path), fmt="standard")
    assert record["chosen"][0]["content"] == transcript
    with pytest.raises(DataError) as caught:
        load_preferences(str(path), fmt="hh")
    # chosen is a transcript, but rejected ("b") has no "Human:"/"Assistant:" turn to split on
    assert (caught.value.reason, caught.value.field, caught.value.row) == ("bad_role", "rejected", 0)
    assert "has no 'Human:' / 'Assistant:' turns" in caught.value.detail
    with pytest.raises(ValueError, match="unknown format"):
        load_preferences(str(path), fmt="nope")


def test_sft_formats_give_the_same_record(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": SYSTEM}, USER, GOOD]
    write_lines(tmp_path / "a.jsonl", [{"messages": messages}])
    write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "completion": CHOSEN, "system": SYSTEM}])
    write_lines(tmp_path / "c.jsonl", [{"prompt": [USER], "completion": [GOOD], "system": SYSTEM}])
    records, report = load_sft(str(tmp_path), policy="drop")
    assert [r["messages"] for r in records] == [messages]
    assert [r["source"] for r in records] == ["a.jsonl"]
    assert report.counts == {"duplicate": 2}
    assert detect_format({"messages": messages}) == "sft_messages"
    assert detect_format({"prompt": PROMPT, "completion": CHOSEN}) == "sft_prompt_completion"


def test_sft_must_end_with_assistant(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "sft.jsonl", [{"messages": [USER, GOOD]}, {"messages": [USER]}])
    with pytest.raises(DataError) as caught:
        load_sft(str(path))
    assert (caught.value.row, caught.value.field, caught.value.reason) == (1, "messages", "bad_role")


# ---------------------------------------------------------------------------- malformed data

BROKEN_ROWS: list[tuple[str, bytes, str, str | None]] = [
    # (file name, second row as bytes, reason, field); the first row is always good.
    ("broken.jsonl", b'{"prompt": "x", "chosen"\n', "bad_json", None),
    ("not_object.jsonl", b"[1, 2]\n", "wrong_type", None),
    ("wrong_type.jsonl", b'{"prompt": "x", "chosen": 5, "rejected": "b"}\n', "wrong_type", "chosen"),
    ("missing.jsonl", b'{"prompt": "x", "chosen": "a"}\n', "missing_field", "rejected"),
    ("null.jsonl", b'{"prompt": null, "chosen": "a", "rejected": "b"}\n', "missing_field", "prompt"),
    ("empty.jsonl", b'{"prompt": "x", "chosen": "  \\n", "rejected": "b"}\n', "empty_text", "chosen"),
    (
        "same.jsonl",
        b'{"prompt": "x", "chosen": "Same  answer", "rejected": "same answer"}\n',
        "identical_pair",
        "rejected",
    ),
    ("latin1.jsonl", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n', "bad_encoding", None),
    ("escaped.jsonl", b'{"prompt": "x\\udc80", "chosen": "a", "rejected": "b"}\n', "bad_encoding", "prompt"),
]


@pytest.mark.parametrize(("name", "bad_row", "reason", "field"), BROKEN_ROWS)
def test_broken_jsonl_rows(tmp_path: Path, name: str, bad_row: bytes, reason: str, field: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(json.dumps(std_row()).encode() + b"\n" + bad_row)
    assert_strict_error(path, row=1, field=field, reason=reason)
    assert_dropped(path, reason)


def assert_strict_error(
    path: Path, *, row: int | None, field: str | None, reason: str, fmt: str = "auto"
) -> None:
    with pytest.raises(DataError) as caught:
        load_preferences(str(path), fmt=fmt)
    error = caught.value
    assert isinstance(error, DataValidationError)
    assert (error.file, error.row, error.field, error.reason) == (str(path), row, field, reason)
    assert f"data error in {path}, row {row}" in str(error) and reason in str(error)
    if field:
        assert f"field '{field}'" in str(error)


def assert_dropped(path: Path, reason: str, fmt: str = "auto") -> None:
    records, report = load_preferences(str(path), fmt=fmt, policy="drop")
    assert len(records) == 1 and report.counts == {reason: 1}
    assert (report.rows_read, report.rows_kept) == (2, 1)
    assert report.examples[reason][0]["row"] == 1
    json.dumps(report.to_dict())


STRUCTURED_ROWS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "conv_bad_order.jsonl",
        {"prompt": [USER, GOOD], "chosen": [GOOD], "rejected": [BAD]},
        "bad_role",
        "prompt",
    ),
    ("conv_user_reply.jsonl", {"prompt": [USER], "chosen": [USER], "rejected": [BAD]}, "bad_role", "chosen"),
    (
        "conv_unknown_role.jsonl",
        {"prompt": [{"role": "robot", "content": "x"}], "chosen": [GOOD], "rejected": [BAD]},
        "bad_role",
        "prompt",
    ),
    (
        "conv_no_content.jsonl",
        {"prompt": [{"role": "user"}], "chosen": [GOOD], "rejected": [BAD]},
        "missing_field",
        "prompt",
    ),
    ("conv_empty_list.jsonl", {"prompt": [USER], "chosen": [], "rejected": [BAD]}, "empty_text", "chosen"),
    (
        "conv_not_message.jsonl",
        {"prompt": [USER], "chosen": ["4"], "rejected": [BAD]},
        "wrong_type",
        "chosen",
    ),
]


@pytest.mark.parametrize(("name", "bad_row", "reason", "field"), STRUCTURED_ROWS)
def test_broken_conversational_rows(
    tmp_path: Path, name: str, bad_row: dict[str, Any], reason: str, field: str
) -> None:
    path = write_lines(tmp_path / name, [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}, bad_row])
    assert_strict_error(path, row=1, field=field, reason=reason)
    assert_dropped(path, reason)


def test_prompt_mismatch_in_implicit_hh_and_ultrafeedback(tmp_path: Path) -> None:
    other = {"role": "user", "content": "Something else?"}
    implicit = write_lines(
        tmp_path / "implicit.jsonl",
        [
            {"chosen": [USER, GOOD], "rejected": [USER, BAD]},
            {"chosen": [USER, GOOD], "rejected": [other, BAD]},
        ],
    )
    hh = write_lines(
        tmp_path / "hh.jsonl",
        [
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"},
        ],
    )
    ultra_good = {
        "prompt": PROMPT,
        "chosen": [USER, GOOD],
        "rejected": [USER, BAD],
        "score_chosen": 5,
        "score_rejected": 1,
    }
    ultra = write_lines(tmp_path / "ultra.jsonl", [ultra_good, {**ultra_good, "prompt": "Different?"}])
    for path, field in [(implicit, "rejected"), (hh, "rejected"), (ultra, "prompt")]:
        assert_strict_error(path, row=1, field=field, reason="prompt_mismatch")
        assert_dropped(path, "prompt_mismatch")


def test_hh_empty_final_turn_and_missing_markers(tmp_path: Path) -> None:
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    empty = write_lines(tmp_path / "empty.jsonl", [good, {**good, "chosen": "\n\nHuman: a\n\nAssistant:"}])
    assert_strict_error(empty, row=1, field="chosen", reason="empty_text")
    plain = write_lines(tmp_path / "plain.jsonl", [good, {**good, "rejected": "just text"}])
    assert_strict_error(plain, row=1, field="rejected", reason="bad_role")


def test_non_utf8_in_csv_and_json_names_the_row(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\nq,a,b\nq2,caf\xe9,b\n")
    assert_strict_error(csv_path, row=1, field="chosen", reason="bad_encoding")
    assert_dropped(csv_path, "bad_encoding")
    json_path = tmp_path / "bad.json"
    json_path.write_bytes(
        b'[{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "\xff", "chosen": "a", "rejected": "b"}]'
    )
    assert_strict_error(json_path, row=1, field="prompt", reason="bad_encoding")


def test_csv_missing_columns_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("prompt,chosen,rejected\nq,a,b\nq2,a2\n")
    assert_strict_error(path, row=1, field="rejected", reason="missing_field")
    assert_dropped(path, "missing_field")
    empty = tmp_path / "empty_cell.csv"
    empty.write_text("prompt,chosen,rejected\nq,a,b\nq2,,b\n")
    assert_strict_error(empty, row=1, field="chosen", reason="empty_text")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("noheader.csv", b"What is 2 + 2?,4,5\nWhat is 3 + 3?,6,7\n", "missing_field"),
        ("blankheader.csv", b"\nq,a,b\n", "missing_field"),
        ("emptyfile.csv", b"", "missing_field"),
        ("corrupt.parquet", b"not a parquet file", "bad_file"),
        ("truncated.json", b'[{"prompt": "q", "chosen": "a"', "bad_json"),
        ("scalar.json", b"42", "wrong_type"),
        ("notes.txt", b"hello", "bad_file"),
    ],
)
def test_broken_files_raise_data_error_under_both_policies(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for policy in ("strict", "drop"):
        with pytest.raises(DataError) as caught:
            load_preferences(str(path), policy=policy)  # type: ignore[arg-type]
        assert (caught.value.file, caught.value.reason) == (str(path), reason)
        assert f"data error in {path}" in str(caught.value)


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    for source in [str(tmp_path / "nope.jsonl"), "data/train.jsonl", str(tmp_path / "absent")]:
        with pytest.raises(DataError, match="no such file or folder: "):
            load_preferences(source)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder has no"):
        load_preferences(str(tmp_path / "empty"))


def test_strict_lists_the_first_ten_failures_and_the_total(tmp_path: Path) -> None:
    rows = [std_row(prompt=f"q{i}", chosen="") for i in range(15)] + [std_row()]
    path = write_lines(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataValidationError) as caught:
        load_preferences(str(path))
    error = caught.value
    assert (error.total, len(error.errors), error.row) == (15, 10, 0)
    text = str(error)
    assert "15 invalid row(s)" in text and "and 5 more" in text
    assert (
        f"data error in {path}, row 9, field 'chosen': empty_text — chosen response is empty or whitespace"
        in text
    )
    records, report = load_preferences(str(path), policy="drop")
    assert len(records) == 1 and report.counts == {"empty_text": 15}
    assert len(report.examples["empty_text"]) == 3


def test_errors_pickle_and_report_serialises() -> None:
    error = DataError("empty_text", "chosen response is empty or whitespace", "train.jsonl", 3, "chosen")
    assert (
        str(error)
        == "data error in train.jsonl, row 3, field 'chosen': empty_text — chosen response is empty or whitespace"
    )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    many = DataValidationError([error, error], 7)
    assert str(pickle.loads(pickle.dumps(many))) == str(many)
    report = DropReport()
    report.add(error)
    assert report.to_dict()["counts"] == {"empty_text": 1}
    assert set(data.REASONS) >= {
        "missing_field",
        "wrong_type",
        "empty_text",
        "identical_pair",
        "prompt_mismatch",
        "bad_role",
        "bad_json",
        "bad_encoding",
        "score_gap",
        "duplicate",
        "too_long",
    }


# ---------------------------------------------------------------------------- filters


def test_duplicates_are_dropped_under_both_policies(tmp_path: Path) -> None:
    rows = [std_row(), std_row(), std_row(prompt="what IS  2 + 2?\n"), std_row(prompt="Other")]
    path = write_lines(tmp_path / "dups.jsonl", rows)
    for policy in ("strict", "drop"):
        records, report = load_preferences(str(path), policy=policy)  # type: ignore[arg-type]
        assert [r["row_index"] for r in records] == [0, 3]
        assert report.counts == {"duplicate": 2}
        assert report.examples["duplicate"][0]["message"] == f"duplicate of {path} row 0"


def test_min_score_gap_drops_without_error(tmp_path: Path) -> None:
    base = {"chosen": [USER, GOOD], "rejected": [USER, BAD]}
    rows = [
        {**base, "score_chosen": 8, "score_rejected": 1},
        {
            **base,
            "score_chosen": 5,
            "score_rejected": 4.5,
            "chosen": [USER, {"role": "assistant", "content": "four"}],
        },
    ]
    path = write_lines(tmp_path / "uf.jsonl", rows)
    records, report = load_preferences(str(path), min_score_gap=1.0)
    assert [r["row_index"] for r in records] == [0] and report.counts == {"score_gap": 1}
    records, report = load_preferences(str(path))
    assert len(records) == 2 and report.counts == {}


# ---------------------------------------------------------------------------- split, fingerprint, round trips


def make_records(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": f"question {i // 2}"}],
            "chosen": [{"role": "assistant", "content": f"good {i}"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "source": "s",
            "row_index": i,
        }
        for i in range(start, start + count)
    ]


def test_split_is_deterministic_keyed_on_prompt_and_stable_when_data_grows() -> None:
    records = make_records(400)
    train, heldout = split_by_hash(records, 0.25)
    assert (train, heldout) == split_by_hash(records, 0.25)
    assert 50 < len(heldout) < 150 and len(train) + len(heldout) == 400
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in heldout}
    bigger_train, bigger_heldout = split_by_hash(make_records(200, start=400) + records[::-1], 0.25)
    assert all(r in bigger_heldout for r in heldout) and all(r in bigger_train for r in train)
    assert split_by_hash(records, 0.25, seed_salt="x")[1] != heldout
    assert split_by_hash(records, 0.0)[1] == [] and split_by_hash(records, 1.0)[0] == []
    with pytest.raises(ValueError):
        split_by_hash(records, 1.5)


def test_write_jsonl_is_atomic_and_round_trips_with_fingerprint(tmp_path: Path) -> None:
    records = make_records(6)
    path = tmp_path / "out" / "pairs.jsonl"
    path.parent.mkdir()
    path.write_text("old contents\n")
    write_jsonl(records, path)
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fingerprint(records)
    assert fingerprint(records) == fingerprint([dict(reversed(r.items())) for r in records])
    assert fingerprint(records) != fingerprint(records[::-1])
    loaded, _ = load_preferences(str(path))
    assert [triple(r) for r in loaded] == [triple(r) for r in records]


def test_parquet_round_trip(tmp_path: Path) -> None:
    records = [triple(r) for r in make_records(1500)]  # more than one parquet batch
    path = write_parquet(tmp_path / "pairs.parquet", records)
    loaded, report = load_preferences(str(path))
    assert [triple(r) for r in loaded] == records
    assert loaded[-1]["row_index"] == 1499 and report.rows_read == 1500


def test_parquet_with_a_column_name_that_is_not_utf8_is_a_bad_file(tmp_path: Path) -> None:
    """Found by tests/alignment/test_data_fuzz.py: pyarrow raised UnicodeDecodeError for such a footer."""
    path = write_parquet(tmp_path / "pairs.parquet", [triple(r) for r in make_records(2)])
    raw = path.read_bytes()
    assert raw.count(b"\x08rejected") >= 1
    path.write_bytes(raw.replace(b"\x08rejected", b"\x08\x8dejected", 1))  # the footer's first copy of the name
    with pytest.raises(DataError) as err:
        load_preferences(str(path))
    assert err.value.reason == "bad_file" and "pairs.parquet" in str(err.value) and "UTF-8" in str(err.value)


def test_folder_reads_supported_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_lines(tmp_path / "b.jsonl", [std_row(prompt="b")])
    write_lines(tmp_path / "sub" / "a.jsonl", [std_row(prompt="c")])
    (tmp_path / "a.json").write_text(json.dumps({"data": [std_row(prompt="a")]}))
    (tmp_path / "README.md").write_text("not data")
    records, _ = load_preferences(str(tmp_path))
    assert [(r["source"], r["prompt"][0]["content"]) for r in records] == [
        ("a.json", "a"),
        ("b.jsonl", "b"),
        ("sub/a.jsonl", "c"),
    ]


def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "lines.json", [std_row(), std_row(prompt="other")])
    records, _ = load_preferences(str(path))
    assert len(records) == 2


# ---------------------------------------------------------------------------- hub


def test_hub_source_uses_streaming_load_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(
        path: str, name: str | None = None, *, split: str, streaming: bool
    ) -> list[dict[str, Any]]:
        calls.append((path, name, split, streaming))
        return [std_row(), {"prompt": "q", "chosen": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records, report = load_preferences("hf://org/prefs", subset="default", split="test", policy="drop")
    assert calls == [("org/prefs", "default", "test", True)]
    assert [triple(r) for r in records] == [EXPECTED] and report.counts == {"missing_field": 1}
    assert records[0]["source"] == "hf://org/prefs[default]:test"
    monkeypatch.chdir(tmp_path)
    load_preferences("org/prefs", policy="drop")
    assert calls[-1] == ("org/prefs", None, "train", True)


# ---------------------------------------------------------------------------- property test


def test_random_rows_give_a_record_a_drop_or_a_data_error() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    texts = st.sampled_from(["", " ", "hi", "\n\nHuman: a\n\nAssistant: b", "Human: x", "[1]"]) | st.text(
        max_size=8
    )
    messages = st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.sampled_from(["user", "assistant", "system", "x", 1]),
                "content": texts | st.none(),
            },
        ),
        max_size=3,
    )
    values = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from([10**400, 1e308])
        | st.floats()
        | texts
        | messages
    )
    keys = st.sampled_from(
        ["prompt", "chosen", "rejected", "system", "messages", "completion", "score_chosen", "score_rejected"]
    )
    rows = st.dictionaries(keys, values, max_size=6) | values

    @hypothesis.settings(max_examples=150, deadline=None, database=None)
    @hypothesis.given(
        st.lists(rows, max_size=4), st.sampled_from(["strict", "drop"]), st.sampled_from([None, 0.5, "sft"])
    )
    def check(batch: list[Any], policy: str, mode: float | str | None) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = str(write_lines(Path(folder) / "rows.jsonl", batch))
            try:
                if mode == "sft":
                    records, report = load_sft(path, policy=policy)  # type: ignore[arg-type]
                else:
                    records, report = load_preferences(path, policy=policy, min_score_gap=mode)  # type: ignore[arg-type]
            except DataError:
                assert policy == "strict"
                return
            assert report.rows_read == len(batch) == report.rows_kept + sum(report.counts.values())
            json.dumps(records)

    check()
