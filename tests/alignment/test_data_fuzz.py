"""Malformed data files, generated: JSON Lines with broken, truncated or mis-encoded lines, JSON of every top
level, ragged or header-less CSV, parquet with wrong column types, empty and corrupt files, folders mixing
good and bad files. Through the loaders users' data goes through (load_preferences, load_sft, prepare), in
both policies: strict gives a DataError naming file, row and field (or the file, for a file-level problem);
drop counts the bad rows per reason and keeps the good ones; nothing else is ever raised, and a failed
`prepare` leaves nothing in its folder that looks complete."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from alignment import data
from alignment.data import DataError, DataValidationError, DropReport, load_preferences, load_sft
from alignment.data.prepare import PrepareOptions, prepare

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FILE_LEVEL = {data.BAD_FILE, data.BAD_JSON, data.WRONG_TYPE, data.MISSING_FIELD, data.BAD_ENCODING}
ROW_WITHOUT_FIELD = {data.BAD_JSON, data.BAD_ENCODING, data.WRONG_TYPE}  # the whole row is unreadable
BOM = b"\xef\xbb\xbf"


@dataclass
class DataFile:
    """A generated file: its name, bytes, and the prompts of the good rows it surely holds."""

    name: str
    content: bytes
    good: list[str] = field(default_factory=list)
    exact: bool = True  # False when a mutation may swallow or shift the good rows


# ---------------------------------------------------------------------------- rows and values

texts = st.sampled_from(["", " ", "hi", "\n\nHuman: a\n\nAssistant: b", "Human: x", "[1]", "é", "\t"]) | st.text(
    max_size=8)
messages = st.lists(st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system", "x", 1]),
                                                        "content": texts | st.none()}), max_size=3)
values = (st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, 1e308, math.nan, math.inf])
          | st.floats() | texts | messages)
keys = st.sampled_from(["prompt", "chosen", "rejected", "system", "messages", "completion", "score_chosen",
                        "score_rejected", "data", "x"])
bad_rows = st.dictionaries(keys, values, max_size=6) | values


def good_row(tag: str, i: int) -> dict[str, str]:
    return {"prompt": f"good question {tag}-{i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"}


# ---------------------------------------------------------------------------- files


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def splice(draw: st.DrawFn, content: bytes, junk: bytes) -> bytes:
    at = draw(st.integers(0, len(content)))
    return content[:at] + junk + content[at:]


@st.composite
def jsonl_files(draw: st.DrawFn, tag: str) -> DataFile:
    lines, good = [], []
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["good", "good", "row", "truncated", "bytes", "utf8", "blank", "bom"]))
        row = good_row(tag, i)
        if kind == "good":
            lines.append(dumps(row))
            good.append(row["prompt"])
        elif kind == "row":
            lines.append(dumps(draw(bad_rows)))
        elif kind == "truncated":
            text = dumps(row)
            lines.append(text[:draw(st.integers(0, len(text) - 1))])
        elif kind == "bytes":
            lines.append(draw(st.binary(max_size=20)).replace(b"\n", b""))
        elif kind == "utf8":
            lines.append(splice(draw, dumps(row), draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))))
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b" ", b"\t"])))
        else:  # a BOM in the middle of the file
            lines.append(BOM + dumps(row))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    content = draw(st.sampled_from([b"", BOM])) + end.join(lines) + (end if lines and draw(st.booleans()) else b"")
    return DataFile(f"{tag}.jsonl", content, good)


@st.composite
def json_files(draw: st.DrawFn, tag: str) -> DataFile:
    items, good = [], []
    for i in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            items.append(good_row(tag, i))
            good.append(items[-1]["prompt"])
        else:
            items.append(draw(bad_rows))
    shape = draw(st.sampled_from(["list", "list", "data", "object", "scalar", "truncated", "utf8", "bom"]))
    if shape == "list":
        return DataFile(f"{tag}.json", dumps(items), good)
    if shape == "data":
        return DataFile(f"{tag}.json", dumps({"data": items}), good)
    if shape == "object":
        return DataFile(f"{tag}.json", dumps(good_row(tag, 0)), [good_row(tag, 0)["prompt"]])
    if shape == "scalar":
        return DataFile(f"{tag}.json", dumps(draw(st.none() | st.integers() | texts | st.just({"data": 5}))))
    text = dumps(items)
    if shape == "truncated":
        return DataFile(f"{tag}.json", text[:draw(st.integers(0, max(0, len(text) - 1)))])
    if shape == "utf8":
        return DataFile(f"{tag}.json", splice(draw, text, b"\xff"), exact=False)
    return DataFile(f"{tag}.json", BOM + text, good)


@st.composite
def csv_files(draw: st.DrawFn, tag: str) -> DataFile:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    header = draw(st.sampled_from(["standard", "standard", "standard", "extra", "missing", "random", "empty_name"]))
    columns = {"standard": ["prompt", "chosen", "rejected"], "extra": ["prompt", "chosen", "rejected", "note"],
               "random": draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3)),
               "empty_name": ["prompt", "", "rejected"], "missing": []}[header]
    if columns:
        writer.writerow(columns)
    good, junk = [], []
    for i in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["good", "good", "ragged", "newlines", "junk"]))
        row = good_row(tag, i)
        if kind == "good":
            writer.writerow([row["prompt"], row["chosen"], row["rejected"], *(["n"] if header == "extra" else [])])
            good.append(row["prompt"])
        elif kind == "ragged":
            writer.writerow(draw(st.lists(texts, min_size=1, max_size=6)))
        elif kind == "newlines":  # quoted cells with newlines and quotes: still one row each
            writer.writerow([f"line one\nline \"two\" {i}", "a,b", "c\r\nd"])
        else:
            junk.append(draw(st.sampled_from(['"unterminated,a,b', "a\x00b,c,d", 'x,"y""z', "\x1a"])))
            out.write(junk[-1] + "\n")
    content = out.getvalue().encode("utf-8")
    if draw(st.integers(0, 4)) == 0:
        content = splice(draw, content, draw(st.sampled_from([b"\xff", b"\xc3\x28", BOM])))
        return DataFile(f"{tag}.csv", content, exact=False)
    exact = header in ("standard", "extra") and not junk
    return DataFile(f"{tag}.csv", content, good if exact else [], exact)


PARQUET_TYPES = ["string", "string", "int64", "float64", "bool", "binary", "messages", "null", "timestamp",
                 "far_date", "struct"]


def parquet_column(kind: str, cells: list[Any]) -> pa.Array:
    """A column of `kind`; `cells` are the good strings (or None) the string kind holds."""
    n = len(cells)
    if kind == "string":
        return pa.array(cells, pa.string())
    if kind == "int64":
        return pa.array(list(range(n)), pa.int64())
    if kind == "float64":
        return pa.array([math.nan] * n, pa.float64())
    if kind == "bool":
        return pa.array([True] * n, pa.bool_())
    if kind == "binary":
        return pa.array([b"\xff\xfe"] * n, pa.binary())
    if kind == "messages":
        return pa.array([[{"role": "user", "content": None}]] * n,
                        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))
    if kind == "null":
        return pa.nulls(n)
    if kind == "timestamp":
        return pa.array([0] * n, pa.timestamp("ns"))
    if kind == "far_date":  # past year 9999: Python cannot hold it
        return pa.array([2**31 - 1] * n, pa.date32())
    return pa.array([{"a": 1}] * n)


@st.composite
def parquet_files(draw: st.DrawFn, tag: str) -> DataFile:
    n = draw(st.integers(0, 5))
    kinds = {name: draw(st.sampled_from(PARQUET_TYPES)) for name in ("prompt", "chosen", "rejected")}
    if draw(st.booleans()):
        kinds = {"prompt": "string", "chosen": "string", "rejected": "string"}
    rows = [good_row(tag, i) if draw(st.booleans()) else {"prompt": draw(st.none() | texts), "chosen": "", "rejected": "x"}
            for i in range(n)]
    table = pa.table({name: parquet_column(kind, [r[name] for r in rows]) for name, kind in kinds.items()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    content = sink.getvalue()
    mutation = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "empty", "garbage"]))
    if mutation == "truncate":
        return DataFile(f"{tag}.parquet", content[:draw(st.integers(0, len(content) - 1))], exact=False)
    if mutation == "flip":
        at = draw(st.integers(0, len(content) - 1))
        return DataFile(f"{tag}.parquet", content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1:], exact=False)
    if mutation == "empty":
        return DataFile(f"{tag}.parquet", b"")
    if mutation == "garbage":
        return DataFile(f"{tag}.parquet", draw(st.binary(max_size=64)))
    all_text = all(kind == "string" for kind in kinds.values())
    return DataFile(f"{tag}.parquet", content, [r["prompt"] for r in rows if all_text and r["chosen"]])


def any_file(tag: str) -> st.SearchStrategy[DataFile]:
    empty = st.sampled_from([".jsonl", ".json", ".csv"]).map(lambda ext: DataFile(f"{tag}{ext}", b""))
    return st.one_of(jsonl_files(tag), jsonl_files(tag), json_files(tag), csv_files(tag), parquet_files(tag), empty)


@st.composite
def sources(draw: st.DrawFn) -> tuple[str, list[DataFile]]:
    """One file, or a folder mixing generated files (some in a subfolder), a README and a hidden file."""
    if draw(st.booleans()):
        return "file", [draw(any_file("f0"))]
    files = [draw(any_file(f"f{i}")) for i in range(draw(st.integers(1, 3)))]
    for i, f in enumerate(files):
        if draw(st.booleans()):
            files[i] = DataFile(f"sub/{f.name}", f.content, f.good, f.exact)
    return "folder", files


def materialise(kind: str, files: list[DataFile], folder: Path) -> str:
    """Write the files; return the source path a user would pass."""
    for f in files:
        (folder / f.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / f.name).write_bytes(f.content)
    if kind == "file":
        return str(folder / files[0].name)
    (folder / "README.md").write_text("not data")
    (folder / ".hidden.jsonl").write_bytes(b"{broken")
    return str(folder)


def display_names(kind: str, source: str, files: list[DataFile]) -> dict[str, DataFile]:
    return {source: files[0]} if kind == "file" else {f.name: f for f in files}


# ---------------------------------------------------------------------------- checks


def check_error(error: DataError, names: dict[str, DataFile], policy: str) -> None:
    """A DataError: in strict mode a list of located row errors, or a file-level error naming the file."""
    message = str(error)
    assert "Traceback" not in message
    if isinstance(error, DataValidationError):
        assert policy == "strict" and message.startswith("data validation failed")
        assert error.total >= len(error.errors) >= 1
        for row_error in error.errors:
            assert row_error.file in names and row_error.row is not None and row_error.row >= 0, row_error
            assert row_error.reason in data.REASONS
            assert row_error.field or row_error.reason in ROW_WITHOUT_FIELD, row_error
            assert f"data error in {row_error.file}, row {row_error.row}" in str(row_error)
            assert str(row_error) in message
        return
    assert error.reason in FILE_LEVEL, message
    assert error.file in names and f"data error in {error.file}" in message, message


def check_loaded(records: list[dict[str, Any]], report: DropReport, names: dict[str, DataFile], policy: str,
                 sft: bool) -> None:
    assert report.rows_read == report.rows_kept + report.rows_dropped and len(records) == report.rows_kept
    assert set(report.counts) <= set(data.REASONS) and all(n > 0 for n in report.counts.values())
    if policy == "strict":
        assert set(report.counts) <= data.FILTER_REASONS, report.counts
    json.dumps(records)
    for record in records:
        assert record["source"] in names and isinstance(record["row_index"], int)
        if sft:
            assert record["messages"][-1]["role"] == "assistant"
        else:
            assert record["prompt"][-1]["role"] == "user" and record["chosen"] and record["rejected"]
    kept_prompts = {(r["source"], (r["messages"] if sft else r["prompt"])[-2 if sft else -1]["content"]) for r in records}
    takes_standard_rows = ("sft_chosen",) if sft else ("standard", "conversational")
    for name, f in names.items():
        if f.exact and report.formats.get(name) in takes_standard_rows:
            missing = [p for p in f.good if (name, p) not in kept_prompts]
            assert not missing, (name, missing, report.to_dict())


def load(source: str, policy: str, sft: bool) -> tuple[list[dict[str, Any]], DropReport] | DataError:
    try:
        return (load_sft if sft else load_preferences)(source, policy=policy)  # type: ignore[arg-type]
    except DataError as error:
        return error


# ---------------------------------------------------------------------------- the property tests


@FUZZ
@given(sources(), st.booleans())
def test_malformed_files_give_errors_or_counted_drops(case: tuple[str, list[DataFile]], sft: bool) -> None:
    kind, files = case
    with tempfile.TemporaryDirectory() as folder:
        source = materialise(kind, files, Path(folder))
        names = display_names(kind, source, files)
        strict, drop = load(source, "strict", sft), load(source, "drop", sft)
    event(f"strict: {type(strict).__name__}, drop: {type(drop).__name__}")
    for policy, result in (("strict", strict), ("drop", drop)):
        if isinstance(result, DataError):
            check_error(result, names, policy)
        else:
            check_loaded(*result, names, policy, sft)
    # The policies agree: one file-level error for both, or strict fails exactly on the rows drop counted.
    if isinstance(drop, DataError):
        assert isinstance(strict, DataError) and not isinstance(strict, DataValidationError)
        assert str(strict) == str(drop)
        return
    records, report = drop
    invalid = sum(n for reason, n in report.counts.items() if reason not in data.FILTER_REASONS)
    if invalid:
        assert isinstance(strict, DataValidationError) and strict.total == invalid, (strict, report.counts)
    else:
        assert not isinstance(strict, DataError), strict
        assert strict[0] == records and strict[1].to_dict() == report.to_dict()


GOOD_SFT = b"".join(dumps({"prompt": f"sft question {i}?", "completion": f"answer {i}"}) + b"\n" for i in range(4))


def complete_looking(out: Path) -> list[str]:
    """What in a prepared folder could pass for finished output: the report, canonical files, temp files."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.name == "report.json" or p.suffix == ".jsonl" or p.name.endswith(".tmp"))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sources(), st.sampled_from(["strict", "drop"]), st.booleans())
def test_failed_prepare_leaves_nothing_that_looks_complete(case: tuple[str, list[DataFile]], policy: str,
                                                          heldout_file: bool) -> None:
    """sft (good), then train (generated), then heldout (good, or split off train): a failure at any step."""
    kind, files = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "in").mkdir()
        train = materialise(kind, files, root / "in")
        sft = write(root / "sft.jsonl", GOOD_SFT)
        heldout = write(root / "heldout.jsonl", b"".join(dumps(good_row("h", i)) + b"\n" for i in range(3)))
        out = root / "out"
        try:
            result = prepare({"sft": sft, "train": train, "heldout": heldout if heldout_file else None}, out,
                             PrepareOptions(policy=policy, heldout_fraction=0.3))
        except DataError as error:
            event(f"prepare failed: {type(error).__name__}")
            assert complete_looking(out) == [], complete_looking(out)
        else:
            event("prepare succeeded")
            assert (out / "report.json").is_file() and result.counts["sft"] == 4
            assert sorted(p.name for p in out.glob("*.jsonl")) == sorted(f"{s}.jsonl" for s in result.counts)


# ---------------------------------------------------------------------------- cases found, pinned


def write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_a_broken_first_row_does_not_fix_the_file_format(tmp_path: Path) -> None:
    """Before: a first row that looked like implicit-format data but failed made every later standard row
    wrong_type, so drop mode silently dropped a whole good file."""
    first = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": 5}
    path = write(tmp_path / "mixed.jsonl", b"".join(dumps(r) + b"\n" for r in [first, good_row("t", 0), good_row("t", 1)]))
    records, report = load_preferences(path, policy="drop")
    assert len(records) == 2 and report.counts == {"wrong_type": 1} and report.formats == {path: "standard"}
    with pytest.raises(DataValidationError) as info:
        load_preferences(path)
    assert info.value.total == 1 and info.value.errors[0].row == 0 and info.value.errors[0].field == "rejected"


@pytest.mark.parametrize("column", [pa.array([2**31 - 1], pa.date32()), pa.array([2**62], pa.duration("s"))],
                         ids=["date past 9999", "huge duration"])
def test_parquet_values_python_cannot_hold_are_row_errors(tmp_path: Path, column: pa.Array) -> None:
    """Before: OverflowError out of pyarrow's to_pylist, a traceback under both policies."""
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"prompt": column, "chosen": ["a"], "rejected": ["b"]}), path)
    with pytest.raises(DataValidationError) as info:
        load_preferences(str(path))
    error = info.value.errors[0]
    assert (error.file, error.row, error.field, error.reason) == (str(path), 0, "prompt", "wrong_type")
    assert load_preferences(str(path), policy="drop")[1].counts == {"wrong_type": 1}


def test_failed_prepare_removes_what_it_wrote_and_the_old_report(tmp_path: Path) -> None:
    """Before: sft.jsonl written before train failed stayed behind, beside the report.json of an earlier
    successful run into the same folder: a folder that looked complete and was not."""
    sft = write(tmp_path / "sft.jsonl", GOOD_SFT)
    good = write(tmp_path / "good.jsonl", b"".join(dumps(good_row("g", i)) + b"\n" for i in range(20)))
    bad = write(tmp_path / "bad.jsonl", dumps(good_row("b", 0)) + b"\n{broken\n")
    out = tmp_path / "out"
    prepare({"sft": sft, "train": good}, out, PrepareOptions(heldout_fraction=0.3))
    assert (out / "report.json").is_file()
    with pytest.raises(DataValidationError):
        prepare({"sft": sft, "train": bad}, out, PrepareOptions(heldout_fraction=0.3))
    assert not (out / "report.json").exists()
    with pytest.raises(DataValidationError):
        prepare({"sft": sft, "train": bad}, tmp_path / "fresh", PrepareOptions(heldout_fraction=0.3))
    assert complete_looking(tmp_path / "fresh") == []


def test_failed_tokenization_removes_the_canonical_files(tmp_path: Path, quick_tokenizer: Any) -> None:
    train = write(tmp_path / "train.jsonl", b"".join(
        dumps({**good_row("t", i), "chosen": "moo " * (60 if i == 3 else 1)}) + b"\n" for i in range(12)))
    out = tmp_path / "out"
    options = PrepareOptions(heldout_fraction=0.0, truncation="reject", max_prompt_tokens=32, max_response_tokens=8)
    with pytest.raises(DataValidationError, match="too_long"):
        prepare({"train": train}, out, options, quick_tokenizer)
    assert complete_looking(out) == []
    assert not [p for p in out.iterdir() if p.name.startswith("tokenized-")]
