"""Prepare data sets: stream sources into canonical JSON Lines, tokenize them with the chat template, report.

Three steps, each usable alone:

* :func:`write_canonical` streams the sources (files, folders, hub ids, s3:// URIs) through validation,
  de-duplication and the content-hash split into ``sft.jsonl``, ``train.jsonl``, ``heldout.jsonl``;
  memory holds one record at a time plus a 16-byte hash per kept row.
* :func:`tokenize_prepared` tokenizes those files with a model's chat template in batches
  (``datasets.map``, ``num_proc`` worker processes), loss on assistant tokens only, and saves each
  split with ``save_to_disk`` under a folder keyed by the data, the tokenizer and the limits (a cache).
  Rows over the limits are truncated (``keep_end``) or rejected with reason ``too_long``.
* :func:`prepare` runs both and writes ``report.json`` plus ``lengths.png``.

Nothing here imports prefect or mlflow; :func:`describe_prepared` gives what a tracker needs to log the
data sets as run inputs (name, path, digest, rows, schema).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignment.data import (
    AUTO,
    MAX_STRICT_ERRORS,
    TOO_LONG,
    DataError,
    DataValidationError,
    DropReport,
    JsonlWriter,
    Policy,
    is_heldout,
    iter_preferences,
    iter_sft,
    iter_unpaired,
)
from alignment.data.report import LengthCollector, plot_lengths, summarise
from alignment.data.tokenization import encode_conversation, encode_texts, split_response
from storage.checksums import file_sha256

if TYPE_CHECKING:
    from types import ModuleType

    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from alignment.config import DataConfig

SPLITS = ("sft", "train", "heldout", "unpaired")
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
SFT_COLUMNS = ("input_ids", "labels")
UNPAIRED_COLUMNS = ("prompt_ids", "completion_ids", "label")
TOKENIZED_VERSION = "1"  # bump when the tokenized layout or truncation rules change
MAP_BATCH_SIZE = 256


@dataclass(frozen=True)
class PrepareOptions:
    """How to read, validate, split and tokenize; :meth:`from_config` maps ``cfg.data`` onto it."""

    fmt: str = AUTO  # preference format
    sft_fmt: str = AUTO
    policy: Policy = "strict"
    min_score_gap: float | None = None
    subset: str | None = None
    sft_split: str = "train"
    train_split: str = "train"
    heldout_split: str = "test"
    max_rows: int | None = None
    heldout_fraction: float = 0.1
    seed_salt: str = ""
    cache_dir: str | None = None
    max_prompt_tokens: int = 96
    max_response_tokens: int = 48
    truncation: str = "keep_end"  # keep_end | reject
    num_proc: int = 1

    @classmethod
    def from_config(cls, data: DataConfig, seed: int) -> PrepareOptions:
        """From an ``alignment.config.DataConfig`` and the run seed (the split's hash salt)."""
        return cls(fmt=data.format, policy=data.on_invalid, min_score_gap=data.min_score_gap, subset=data.subset,
                   sft_split=data.sft_split, train_split=data.train_split, heldout_split=data.heldout_split,
                   max_rows=data.max_rows, heldout_fraction=data.heldout_fraction, seed_salt=str(seed),
                   cache_dir=data.cache_dir, max_prompt_tokens=data.max_prompt_tokens,
                   max_response_tokens=data.max_response_tokens, truncation=data.truncation,
                   num_proc=data.num_proc)


@dataclass
class CanonicalFiles:
    """What :func:`write_canonical` wrote: per split its row count and file SHA-256, and the drop reports."""

    dir: str
    counts: dict[str, int] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    drops: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    lengths: LengthCollector = field(default_factory=LengthCollector, repr=False)

    def path(self, split: str) -> Path:
        return Path(self.dir) / f"{split}.jsonl"


@dataclass
class TokenizedSplit:
    path: str  # a datasets.save_to_disk folder
    rows: int
    dropped_too_long: int
    truncated: dict[str, int]  # field -> rows cut to the limit


@dataclass
class TokenizedData:
    dir: str
    key: str
    splits: dict[str, TokenizedSplit]
    drops: dict[str, dict[str, Any]]  # split -> DropReport dict of too_long rows
    lengths: dict[str, list[int]] = field(repr=False, default_factory=dict)  # before truncation


@dataclass
class PreparedFiles:
    """The result of :func:`prepare`; small and JSON-serialisable (:meth:`to_dict`)."""

    dir: str
    fingerprint: str  # SHA-256 over the splits' file fingerprints
    fingerprints: dict[str, str]
    counts: dict[str, int]
    report: dict[str, Any]
    tokenized_dir: str | None = None

    def path(self, split: str) -> Path:
        return Path(self.dir) / f"{split}.jsonl"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- canonical files


def write_canonical(sources: Mapping[str, str | None], out_dir: str | os.PathLike[str],
                    options: PrepareOptions = PrepareOptions()) -> CanonicalFiles:
    """Stream ``sources`` (keys ``sft``, ``train``, ``heldout``; any may be None) into canonical files.

    Without a heldout source, train rows are split by prompt hash (``heldout_fraction``, salted with
    ``seed_salt``). Under the strict policy a DataValidationError is raised after the whole source was
    read. A requested split with no usable rows is a DataError. On any error no file this call wrote is
    left behind (a folder never holds some splits of a failed call beside others).
    """
    unknown = set(sources) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {', '.join(SPLITS)}")
    result = CanonicalFiles(dir=str(Path(out_dir)))
    try:
        _write_sources(result, sources, options)
    except BaseException:
        _remove_splits(result)
        raise
    return result


def _remove_splits(result: CanonicalFiles) -> None:
    for split in result.counts:
        result.path(split).unlink(missing_ok=True)


def _write_sources(result: CanonicalFiles, sources: Mapping[str, str | None], options: PrepareOptions) -> None:
    common = {"policy": options.policy, "subset": options.subset, "cache_dir": options.cache_dir,
              "max_rows": options.max_rows}
    if sources.get("sft"):
        report = DropReport()
        records = iter_sft(sources["sft"], fmt=options.sft_fmt, split=options.sft_split, report=report, **common)  # type: ignore[arg-type]
        _write_split(result, "sft", sources["sft"], records, report)
    if sources.get("train"):
        _write_train(result, sources, options, common)
    if sources.get("heldout"):
        report = DropReport()
        records = iter_preferences(sources["heldout"], fmt=options.fmt, min_score_gap=options.min_score_gap,
                                   split=options.heldout_split, report=report, **common)  # type: ignore[arg-type]
        _write_split(result, "heldout", sources["heldout"], records, report)
    if sources.get("unpaired"):
        report = DropReport()
        records = iter_unpaired(sources["unpaired"], split=options.train_split, report=report, **common)  # type: ignore[arg-type]
        _write_split(result, "unpaired", sources["unpaired"], records, report)
    for split, count in result.counts.items():
        if count:
            continue
        if split == "heldout" and not sources.get("heldout"):  # split off train by prompt hash: none landed
            raise DataError("empty_split", f"the held-out split is empty: heldout_fraction={options.heldout_fraction} "
                            f"of {result.counts.get('train', 0)} training rows put no row aside; name a held-out "
                            f"file (--heldout / data.heldout_path), raise the fraction (data.heldout_fraction) or "
                            f"add rows", file=sources["train"])
        raise DataError("missing_field", f"no usable {split} rows after validation", file=result.sources[split])


def _write_split(result: CanonicalFiles, split: str, source: str, records: Any, report: DropReport) -> None:
    with JsonlWriter(result.path(split)) as writer:
        for record in records:
            writer.write(record)
            result.lengths.add_record_chars(record)
    _finish_split(result, split, source, writer, report)


def _finish_split(result: CanonicalFiles, split: str, source: str, writer: JsonlWriter,
                  report: DropReport | None) -> None:
    result.counts[split] = writer.count
    result.fingerprints[split] = writer.fingerprint
    result.sources[split] = source
    if report is not None:  # rows split off from train are counted in train's report
        result.drops[split] = report.to_dict()


def _write_train(result: CanonicalFiles, sources: Mapping[str, str | None], options: PrepareOptions,
                 common: dict[str, Any]) -> None:
    source = sources["train"]
    assert source
    report = DropReport()
    records = iter_preferences(source, fmt=options.fmt, min_score_gap=options.min_score_gap,
                               split=options.train_split, report=report, **common)
    split_off = not sources.get("heldout") and options.heldout_fraction > 0
    if not split_off:
        _write_split(result, "train", source, records, report)
        return
    with JsonlWriter(result.path("train")) as train, JsonlWriter(result.path("heldout")) as heldout:
        for record in records:
            side = heldout if is_heldout(record, options.heldout_fraction, options.seed_salt) else train
            side.write(record)
            result.lengths.add_record_chars(record)
    _finish_split(result, "train", source, train, report)
    _finish_split(result, "heldout", f"{source} (split off by prompt hash)", heldout, None)


# ---------------------------------------------------------------------------- tokenization


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of the tokenizer's vocabulary/merges (fast tokenizers) and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    blob = json.dumps([body, getattr(tokenizer, "chat_template", None), type(tokenizer).__name__])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def encode_pair_batch(batch: Mapping[str, list[Any]], *, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int,
                      max_response_tokens: int, truncation: str) -> dict[str, list[Any]]:
    """One datasets.map batch of canonical pairs -> token ids (as tokenization.encode_pairs), the lengths
    before truncation and a too_long flag. Texts are rendered per row, then tokenized in one batch each."""
    prompts, chosens, rejecteds = [], [], []
    for prompt, chosen, rejected in zip(batch["prompt"], batch["chosen"], batch["rejected"], strict=True):
        prompt_text, chosen_text = split_response(tokenizer, prompt, chosen)
        _, rejected_text = split_response(tokenizer, prompt, rejected)
        prompts.append(prompt_text)
        chosens.append(chosen_text)
        rejecteds.append(rejected_text)
    prompt_ids, chosen_ids, rejected_ids = (encode_texts(tokenizer, texts) for texts in (prompts, chosens, rejecteds))
    out: dict[str, list[Any]] = {
        "prompt_tokens": [len(ids) for ids in prompt_ids],
        "chosen_tokens": [len(ids) for ids in chosen_ids],
        "rejected_tokens": [len(ids) for ids in rejected_ids],
    }
    out["too_long"] = [
        p > max_prompt_tokens or c > max_response_tokens or r > max_response_tokens
        for p, c, r in zip(out["prompt_tokens"], out["chosen_tokens"], out["rejected_tokens"], strict=True)
    ] if truncation == "reject" else [False] * len(prompts)
    out["prompt_ids"] = [ids[-max_prompt_tokens:] for ids in prompt_ids]
    out["chosen_ids"] = [ids[:max_response_tokens] for ids in chosen_ids]
    out["rejected_ids"] = [ids[:max_response_tokens] for ids in rejected_ids]
    return out


def encode_unpaired_batch(batch: Mapping[str, list[Any]], *, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int,
                          max_response_tokens: int, truncation: str) -> dict[str, list[Any]]:
    """One datasets.map batch of canonical unpaired examples -> prompt_ids, completion_ids and label, with the
    lengths before truncation and the too_long flag (the completion under the response limit, as a pair's)."""
    prompts, completions = [], []
    for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True):
        prompt_text, completion_text = split_response(tokenizer, prompt, completion)
        prompts.append(prompt_text)
        completions.append(completion_text)
    prompt_ids, completion_ids = encode_texts(tokenizer, prompts), encode_texts(tokenizer, completions)
    out: dict[str, list[Any]] = {"prompt_tokens": [len(ids) for ids in prompt_ids],
                                 "completion_tokens": [len(ids) for ids in completion_ids]}
    out["too_long"] = [p > max_prompt_tokens or c > max_response_tokens
                       for p, c in zip(out["prompt_tokens"], out["completion_tokens"], strict=True)
                       ] if truncation == "reject" else [False] * len(prompts)
    out["prompt_ids"] = [ids[-max_prompt_tokens:] for ids in prompt_ids]
    out["completion_ids"] = [ids[:max_response_tokens] for ids in completion_ids]
    out["label"] = [bool(label) for label in batch["label"]]
    return out


def encode_sft_batch(batch: Mapping[str, list[Any]], *, tokenizer: PreTrainedTokenizerBase, max_tokens: int,
                     truncation: str) -> dict[str, list[Any]]:
    """One datasets.map batch of canonical SFT rows -> input_ids and labels (as tokenization.encode_sft)."""
    input_ids, labels, lengths = [], [], []
    for messages in batch["messages"]:
        ids, lab = encode_conversation(tokenizer, messages)
        lengths.append(len(ids))
        input_ids.append(ids[:max_tokens])
        labels.append(lab[:max_tokens])
    too_long = [n > max_tokens for n in lengths] if truncation == "reject" else [False] * len(lengths)
    return {"input_ids": input_ids, "labels": labels, "sft_tokens": lengths, "too_long": too_long}


def tokenize_prepared(prepared_dir: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase,
                      options: PrepareOptions = PrepareOptions(), *,
                      splits: Sequence[str] = SPLITS) -> TokenizedData:
    """Tokenize the canonical files found in ``prepared_dir`` and save them under
    ``prepared_dir/tokenized-<key>/<split>`` (``datasets.save_to_disk``); reuse that folder when it is
    complete. ``<key>`` hashes the files, the tokenizer and the limits.

    Pair splits have columns prompt_ids, chosen_ids, rejected_ids (what ``logprobs.collate_pairs``
    takes) plus lengths before truncation; the SFT split has input_ids and labels (IGNORE_INDEX off the
    assistant turns). With ``truncation="reject"`` over-long rows get reason ``too_long``: under the
    strict policy a DataValidationError, under drop they are left out and counted.
    """
    if options.truncation not in ("keep_end", "reject"):
        raise ValueError(f"truncation must be 'keep_end' or 'reject', not {options.truncation!r}")
    prepared = Path(prepared_dir)
    present = [s for s in splits if (prepared / f"{s}.jsonl").is_file()]
    key = _tokenized_key(prepared, present, tokenizer, options)
    target = prepared / f"tokenized-{key}"
    manifest = target / "manifest.json"
    if manifest.is_file():
        return _read_manifest(manifest)
    staging = Path(tempfile.mkdtemp(dir=prepared, prefix=f".tokenized-{key}."))
    try:
        result = _tokenize_all(prepared, present, tokenizer, options, staging, key)
        _write_manifest(staging / "manifest.json", result, target)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _read_manifest(manifest)


def _tokenized_key(prepared: Path, splits: Sequence[str], tokenizer: PreTrainedTokenizerBase, options: PrepareOptions) -> str:
    parts = [TOKENIZED_VERSION, tokenizer_fingerprint(tokenizer), options.max_prompt_tokens,
             options.max_response_tokens, options.truncation, options.policy,
             {s: file_sha256(prepared / f"{s}.jsonl") for s in splits}]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _tokenize_all(prepared: Path, splits: Sequence[str], tokenizer: PreTrainedTokenizerBase, options: PrepareOptions,
                  staging: Path, key: str) -> TokenizedData:
    import datasets

    result = TokenizedData(dir=str(prepared / f"tokenized-{key}"), key=key, splits={}, drops={})
    errors: list[DataError] = []
    error_total = 0
    hf_cache = staging / ".hf-cache"
    with _quiet_datasets(datasets):
        for split in splits:
            encoded = _encode_split(datasets, prepared / f"{split}.jsonl", split, tokenizer, options, hf_cache)
            kept, report, found = _drop_too_long(encoded, options)
            error_total += len(found)
            errors += found[: MAX_STRICT_ERRORS - len(errors)]
            _collect_lengths(result.lengths, encoded, split)
            columns = {"sft": SFT_COLUMNS, "unpaired": UNPAIRED_COLUMNS}.get(split, PAIR_COLUMNS)
            length_columns = {"sft": ["sft_tokens"], "unpaired": ["prompt_tokens", "completion_tokens"]}.get(
                split, ["prompt_tokens", "chosen_tokens", "rejected_tokens"])
            kept = kept.select_columns([*columns, *length_columns, "source", "row_index"])
            kept.save_to_disk(str(staging / split))
            result.splits[split] = TokenizedSplit(
                path=str(Path(result.dir) / split), rows=len(kept), dropped_too_long=report.rows_dropped,
                truncated=_truncated_counts(encoded, split, options))
            result.drops[split] = report.to_dict()
    shutil.rmtree(hf_cache, ignore_errors=True)
    if error_total and options.policy == "strict":
        raise DataValidationError(errors, error_total)
    return result


class _quiet_datasets:
    """Silence datasets' progress bars while tokenizing (they would flood a log)."""

    def __init__(self, datasets: ModuleType) -> None:
        self.datasets = datasets

    def __enter__(self) -> None:
        self.was_enabled = self.datasets.is_progress_bar_enabled()
        self.datasets.disable_progress_bars()

    def __exit__(self, *exc: Any) -> None:
        if self.was_enabled:
            self.datasets.enable_progress_bars()


def _encode_split(datasets: ModuleType, path: Path, split: str, tokenizer: PreTrainedTokenizerBase, options: PrepareOptions,
                  hf_cache: Path) -> Dataset:
    if path.stat().st_size == 0:
        raise DataError("missing_field", f"no {split} rows to tokenize", file=str(path))
    dataset = datasets.Dataset.from_json(str(path), cache_dir=str(hf_cache), keep_in_memory=False)
    if split == "sft":
        function: Any = encode_sft_batch
        kwargs = {"tokenizer": tokenizer, "max_tokens": options.max_prompt_tokens + options.max_response_tokens,
                  "truncation": options.truncation}
    elif split == "unpaired":
        function = encode_unpaired_batch
        kwargs = {"tokenizer": tokenizer, "max_prompt_tokens": options.max_prompt_tokens,
                  "max_response_tokens": options.max_response_tokens, "truncation": options.truncation}
    else:
        function = encode_pair_batch
        kwargs = {"tokenizer": tokenizer, "max_prompt_tokens": options.max_prompt_tokens,
                  "max_response_tokens": options.max_response_tokens, "truncation": options.truncation}
    drop = [c for c in dataset.column_names if c not in ("source", "row_index")]
    fingerprint = hashlib.sha256(f"{path}:{file_sha256(path)}:{sorted(options.__dict__.items())}".encode())
    return dataset.map(function, batched=True, batch_size=MAP_BATCH_SIZE, fn_kwargs=kwargs,
                       num_proc=options.num_proc if options.num_proc > 1 else None, remove_columns=drop,
                       load_from_cache_file=False, new_fingerprint=fingerprint.hexdigest()[:16],
                       desc=f"tokenizing {split}")


def _drop_too_long(encoded: Dataset, options: PrepareOptions) -> tuple[Dataset, DropReport, list[DataError]]:
    """(rows within the limits, the too_long drop report, strict-mode errors: the first ten)."""
    report = DropReport(rows_read=len(encoded))
    bad = [index for index, flag in enumerate(encoded["too_long"]) if flag]
    errors: list[DataError] = []
    for number, index in enumerate(bad):
        if number < MAX_STRICT_ERRORS:  # locate only the few shown; count the rest
            error = _too_long_error(encoded[index], options)
            report.add(error)
            errors.append(error)
        else:
            report.counts[TOO_LONG] += 1
    if bad:
        bad_set = set(bad)
        encoded = encoded.select([i for i in range(len(encoded)) if i not in bad_set])
    report.rows_kept = len(encoded)
    return encoded, report, errors if options.policy == "strict" else []


def _too_long_error(row: Mapping[str, Any], options: PrepareOptions) -> DataError:
    if "sft_tokens" in row:
        limit = options.max_prompt_tokens + options.max_response_tokens
        detail, where = f"conversation has {row['sft_tokens']} tokens; the limit is {limit}", "messages"
    else:
        responses = ("completion",) if "completion_tokens" in row else ("chosen", "rejected")
        over = [(name, row[f"{name}_tokens"], limit) for name, limit in (
            ("prompt", options.max_prompt_tokens), *((r, options.max_response_tokens) for r in responses))
            if row[f"{name}_tokens"] > limit]
        where = over[0][0]
        detail = "; ".join(f"{name} has {n} tokens (limit {limit})" for name, n, limit in over)
    return DataError(TOO_LONG, detail, file=row["source"], row=row["row_index"], field=where)


def _collect_lengths(lengths: dict[str, list[int]], encoded: Dataset, split: str) -> None:
    if split == "sft":
        lengths.setdefault("sft", []).extend(encoded["sft_tokens"])
        return
    for name in ("prompt", "completion") if split == "unpaired" else ("prompt", "chosen", "rejected"):
        lengths.setdefault(name, []).extend(encoded[f"{name}_tokens"])


def _truncated_counts(encoded: Dataset, split: str, options: PrepareOptions) -> dict[str, int]:
    if split == "sft":
        limit = options.max_prompt_tokens + options.max_response_tokens
        return {"sft": sum(n > limit for n in encoded["sft_tokens"])}
    limits = {"prompt": options.max_prompt_tokens, "chosen": options.max_response_tokens,
              "rejected": options.max_response_tokens, "completion": options.max_response_tokens}
    return {name: sum(n > limit for n in encoded[f"{name}_tokens"]) for name, limit in limits.items()
            if f"{name}_tokens" in encoded.column_names}


def _write_manifest(path: Path, result: TokenizedData, target: Path) -> None:
    body = asdict(result)
    body["lengths"] = {k: list(v) for k, v in result.lengths.items()}
    path.write_text(json.dumps(body))


def _read_manifest(path: Path) -> TokenizedData:
    body = json.loads(path.read_text())
    splits = {name: TokenizedSplit(**info) for name, info in body.pop("splits").items()}
    return TokenizedData(splits=splits, **body)


def load_tokenized_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of one tokenized split as dicts of token-id lists (the trainer's input)."""
    import datasets

    dataset = datasets.load_from_disk(str(path))
    columns = list(dict.fromkeys(c for c in (*PAIR_COLUMNS, *SFT_COLUMNS, *UNPAIRED_COLUMNS)
                                 if c in dataset.column_names))
    return dataset.select_columns(columns).to_list()


# ---------------------------------------------------------------------------- the whole step


def prepare(sources: Mapping[str, str | None], out_dir: str | os.PathLike[str],
            options: PrepareOptions = PrepareOptions(), tokenizer: PreTrainedTokenizerBase | None = None) -> PreparedFiles:
    """Canonical files, the tokenized cache (when a tokenizer is given), ``report.json`` and ``lengths.png``.

    The report holds counts per split, drops by reason with examples (per source, and too_long after
    tokenization), the sources, the detected formats, each file's SHA-256 and length statistics in
    tokens (with a tokenizer; before truncation) or characters.

    ``report.json`` is written last and marks a complete folder: a failed call leaves none (an older one is
    removed first) and removes the canonical files it wrote.
    """
    (Path(out_dir) / "report.json").unlink(missing_ok=True)
    canonical = write_canonical(sources, out_dir, options)
    try:
        tokenized = (tokenize_prepared(out_dir, tokenizer, options, splits=list(canonical.counts))
                     if tokenizer is not None else None)
    except BaseException:
        _remove_splits(canonical)
        raise
    lengths = tokenized.lengths if tokenized else {k: list(v) for k, v in canonical.lengths.lengths.items()}
    unit = "tokens" if tokenized else "characters"
    limits = ({"prompt": options.max_prompt_tokens, "chosen": options.max_response_tokens,
               "rejected": options.max_response_tokens,
               "sft": options.max_prompt_tokens + options.max_response_tokens} if tokenized else None)
    out = Path(out_dir)
    plot_lengths(lengths, unit, out / "lengths.png", limits, title=f"lengths ({unit}, before truncation)")
    fingerprint = hashlib.sha256(json.dumps(canonical.fingerprints, sort_keys=True).encode()).hexdigest()
    report: dict[str, Any] = {
        "counts": canonical.counts,
        "drops": canonical.drops,
        "sources": canonical.sources,
        "fingerprints": canonical.fingerprints,
        "fingerprint": fingerprint,
        "length_unit": unit,
        "lengths": {name: summarise(values) for name, values in lengths.items()},
        "plots": ["lengths.png"],
        "options": asdict(options),
    }
    if tokenized:
        report["tokenized"] = {
            "dir": tokenized.dir, "key": tokenized.key, "drops": tokenized.drops,
            "splits": {name: asdict(info) for name, info in tokenized.splits.items()},
        }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return PreparedFiles(dir=str(out), fingerprint=fingerprint, fingerprints=canonical.fingerprints,
                         counts=canonical.counts, report=report,
                         tokenized_dir=tokenized.dir if tokenized else None)


# ---------------------------------------------------------------------------- descriptions for trackers


CANONICAL_SCHEMAS = {
    "sft": {"messages": "list<{role: string, content: string}>", "source": "string", "row_index": "long"},
    "preference": {"prompt": "list<{role: string, content: string}>",
                   "chosen": "list<{role: string, content: string}>",
                   "rejected": "list<{role: string, content: string}>", "source": "string", "row_index": "long"},
}


def describe_prepared(prepared_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One pandas-free description per prepared split, read from ``report.json``: name, split, path,
    digest (the file's SHA-256), rows, source and schema (column -> type), for logging as run inputs."""
    folder = Path(prepared_dir)
    report = json.loads((folder / "report.json").read_text())
    described = []
    for split, digest in report["fingerprints"].items():
        described.append({
            "name": split, "split": split, "path": str((folder / f"{split}.jsonl").resolve()), "digest": digest,
            "rows": report["counts"][split], "source": report["sources"].get(split),
            "schema": CANONICAL_SCHEMAS["sft" if split == "sft" else "preference"],
        })
    return described
