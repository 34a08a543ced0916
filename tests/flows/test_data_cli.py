"""`alignflow data inspect|prepare` in-process: reports, exit codes, and a corpus of malformed files that
each give a clear error or a counted drop, never a traceback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from flows.data_cli import add_data_commands

GOOD = b'{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}\n'


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="alignflow")
    handlers = add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return handlers[args.command](args)


MALFORMED: dict[str, tuple[bytes, str]] = {
    # file name: (content after one good row, reason in drop mode)
    "broken.jsonl": (b'{"prompt": "x", "chosen": \n', "bad_json"),
    "wrong_type.jsonl": (b'{"prompt": "x", "chosen": 5, "rejected": "b"}\n', "wrong_type"),
    "missing_column.jsonl": (b'{"prompt": "x", "chosen": "a"}\n', "missing_field"),
    "empty_value.jsonl": (b'{"prompt": "x", "chosen": "", "rejected": "b"}\n', "empty_text"),
    "identical.jsonl": (b'{"prompt": "x", "chosen": "same", "rejected": "same"}\n', "identical_pair"),
    "latin1.jsonl": (b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n', "bad_encoding"),
    "not_object.jsonl": (b'"just a string"\n', "wrong_type"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_rows_fail_strict_with_exit_1_and_are_counted_in_drop(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, reason = MALFORMED[name]
    path = tmp_path / name
    path.write_bytes(GOOD + bad)
    assert main(["data", "inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: data validation failed: 1 invalid row(s)") and "row 1" in err
    assert reason in err and "Traceback" not in err
    assert main(["data", "inspect", str(path), "--policy", "drop", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["drops"]["input"]
    assert report["counts"] == {reason: 1} and report["rows_kept"] == 1


@pytest.mark.parametrize(("content", "match"), [
    (b"What is 2 + 2?,4,5\nq,a,b\n", "CSV header row is missing"),
    (b"", "CSV header row is missing"),
    (b"prompt,chosen,rejected\n\"unterminated,4,5\n", None),
])
def test_csv_without_header_is_a_clear_error(content: bytes, match: str | None, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    for policy in ("strict", "drop"):
        code = main(["data", "inspect", str(path), "--policy", policy])
        err = capsys.readouterr().err
        if match is None:  # an unterminated quote swallows the file: one bad or short row, never a crash
            assert code in (0, 1) and "Traceback" not in err
            continue
        assert code == 1 and match in err and err.startswith("error: ")


def test_file_level_problems_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    (tmp_path / "x.txt").write_text("hello")
    for source, match in [(tmp_path / "missing.jsonl", "no such file"), (tmp_path / "x.parquet", "parquet"),
                          (tmp_path / "x.txt", "unsupported file type")]:
        assert main(["data", "inspect", str(source), "--policy", "drop"]) == 1
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1
    assert main(["data", "inspect", str(tmp_path / "x.txt"), "--format", "sft_messages"]) == 2
    assert "add --sft" in capsys.readouterr().err


def test_inspect_reports_format_counts_and_lengths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hh.jsonl"
    rows = [{"chosen": f"\n\nHuman: hi {i}\n\nAssistant: hello\n\nHuman: more\n\nAssistant: yes {i}",
             "rejected": f"\n\nHuman: hi {i}\n\nAssistant: hello\n\nHuman: more\n\nAssistant: no"} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[0]]))
    assert main(["data", "inspect", str(path), "--policy", "drop"]) == 0
    out = capsys.readouterr().out
    assert "format: hh" in out and "6 read, 5 kept, 1 dropped" in out and "dropped duplicate: 1" in out
    assert "length of prompt (characters)" in out
    assert main(["data", "inspect", str(path), "--json", "--policy", "drop"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the prompt keeps every earlier turn: "hi i", "hello", "more"
    assert report["lengths"]["prompt"]["min"] == len("hi 0") + len("hello") + len("more")
    assert main(["data", "inspect", str(path), "--sft", "--json", "--policy", "drop"]) == 0
    assert json.loads(capsys.readouterr().out)["drops"]["input"]["formats"] == {str(path): "sft_chosen"}


def test_prepare_with_a_model_writes_tokenized_cache_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alignment.instruct import quicktask
    from alignment.models.tiny import train_tokenizer

    model_dir = tmp_path / "tok"
    train_tokenizer(quicktask.corpus(), 1024).save_pretrained(model_dir)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What does cow {i} say?", "chosen": "Moo.", "rejected": "No."})
                            + "\n" for i in range(30)))
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(path), "--out", str(out), "--model", str(model_dir),
                 "--heldout-fraction", "0.3"]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().endswith(f"prepared: {out}/report.json") and "length of prompt (tokens)" in text
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["train"] + report["counts"]["heldout"] == 30
    assert Path(report["tokenized"]["splits"]["train"]["path"]).is_dir()
    assert main(["data", "inspect", str(path), "--model", str(model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["length_unit"] == "tokens"
    assert main(["data", "prepare", str(path), "--out", str(out), "--model", str(tmp_path / "nope")]) == 2
    assert "cannot load tokenizer" in capsys.readouterr().err


def test_prepare_sft_from_s3(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    body = "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": f"a{i}"}]}) + "\n" for i in range(3))
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="cli/sft.jsonl", Body=body.encode())
    uri = f"s3://{s3_server.bucket}/cli/sft.jsonl"
    assert main(["data", "prepare", uri, "--sft", "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    captured = capsys.readouterr()
    assert "downloading " + uri in captured.err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"] == {"sft": 3}


def test_prepare_of_a_tiny_file_says_the_heldout_split_is_empty_and_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three rows at the default held-out fraction (0.1) put none aside: no field is missing, so the message
    must not say so; it names the fraction, the row count and the two settings that fix it."""
    path = tmp_path / "three.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": "0"})
                            + "\n" for i in (0, 2, 3)))  # (1 would be held out by the seed-0 hash)
    out = tmp_path / "prepared"
    code = main(["data", "prepare", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0, "preparing a 3-row file with an empty held-out split should fail"
    assert "missing_field" not in err, err
    assert "held-out split is empty" in err and "heldout_fraction=0.1" in err and "of 3 training rows" in err, err
    assert "--heldout" in err and str(path) in err, err
    assert not (out / "train.jsonl").exists(), "a failed prepare left train.jsonl behind"
