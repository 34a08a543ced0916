"""`alignflow data inspect|prepare`: look at a data source, or prepare it into canonical files and a cache.

    alignflow data inspect SOURCE [--format F] [--policy strict|drop] [--sft] [--json] [--model M]
    alignflow data prepare SOURCE --out DIR [--model NAME_OR_PATH] [--sft] [--heldout SOURCE] ...

SOURCE is a file, a folder, a hub id (``owner/name``, with ``--subset``/``--split``) or an ``s3://`` URI.
Bad data is a one-line (or, in strict mode, a short list) ``error:`` on stderr and exit code 1, never a
traceback; a bad model or option is exit code 2. Wire it with :func:`add_data_commands`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

Handler = Callable[[argparse.Namespace], int]
PREFERENCE_FORMATS = ("auto", "standard", "conversational", "implicit", "hh", "ultrafeedback")
SFT_FORMATS = ("sft_messages", "sft_prompt_completion", "sft_chosen")
INSPECT_BATCH = 256


def add_data_commands(subparsers: Any) -> dict[str, Handler]:
    """Add ``data`` (with ``inspect`` and ``prepare``) to the CLI's subparsers; returns {"data": handler}."""
    data = subparsers.add_parser("data", help="inspect or prepare a data set")
    sub = data.add_subparsers(dest="data_command", required=True)
    inspect = sub.add_parser("inspect", help="detected format, row counts, drops by reason, lengths")
    _add_source_options(inspect)
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--model", help="count lengths in this tokenizer's tokens (else characters)")
    prepare = sub.add_parser("prepare", help="canonical files, tokenized cache (with --model) and report")
    _add_source_options(prepare)
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--model", help="tokenize with this model's chat template (hub id or folder)")
    prepare.add_argument("--heldout", help="held-out preference source (else split off --heldout-fraction)")
    prepare.add_argument("--heldout-fraction", type=float, default=0.1, help="share split off by prompt hash")
    prepare.add_argument("--heldout-split", default="test", help="hub split of --heldout")
    prepare.add_argument("--seed", type=int, default=0, help="salt of the held-out split's hash")
    prepare.add_argument("--max-prompt-tokens", type=int, default=96)
    prepare.add_argument("--max-response-tokens", type=int, default=48)
    prepare.add_argument("--truncation", choices=("keep_end", "reject"), default="keep_end",
                         help="keep_end: cut prompts from the left, responses from the right; reject: "
                              "over-long rows are too_long (the policy decides)")
    prepare.add_argument("--num-proc", type=int, default=1, help="tokenization worker processes")
    prepare.add_argument("--trust-remote-code", action="store_true")
    prepare.add_argument("--json", action="store_true", help="print the report as JSON")
    return {"data": run_data_command}


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="file, folder, hub id (owner/name) or s3://bucket/key")
    parser.add_argument("--format", default="auto", choices=PREFERENCE_FORMATS + SFT_FORMATS,
                        help="input format (default: detected per file)")
    parser.add_argument("--policy", choices=("strict", "drop"), default="strict",
                        help="strict: fail on the first invalid rows; drop: drop and count them")
    parser.add_argument("--sft", action="store_true", help="SFT data (messages or prompt/completion)")
    parser.add_argument("--subset", help="hub data set configuration")
    parser.add_argument("--split", default="train", help="hub split (default train)")
    parser.add_argument("--min-score-gap", type=float, help="UltraFeedback: minimum score_chosen - score_rejected")
    parser.add_argument("--max-rows", type=int, help="read at most this many rows")
    parser.add_argument("--cache-dir", help="download folder for s3:// sources")


def run_data_command(args: argparse.Namespace) -> int:
    """Run ``data inspect`` or ``data prepare``; user errors print ``error: ...`` and return 1 or 2."""
    from alignment.data import DataError
    from alignment.data.tokenization import TemplateError
    from storage.s3 import StorageError

    _log_to_stderr()
    try:
        _check_args(args)
        return {"inspect": command_inspect, "prepare": command_prepare}[args.data_command](args)
    except (DataError, StorageError) as err:  # a file that cannot be read, local or in S3
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (TemplateError, ValueError, _model_load_error()) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _model_load_error() -> type[BaseException]:
    if "alignment.models.loading" in sys.modules:  # only imported (with torch) when --model was given
        return sys.modules["alignment.models.loading"].ModelLoadError  # type: ignore[no-any-return]
    return _Never


class _Never(Exception):
    pass


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (it may be replaced, e.g. under test capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _log_to_stderr() -> None:
    """s3 download progress goes to stderr, so --json output on stdout stays clean."""
    logger = logging.getLogger("alignflow")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)


def _check_args(args: argparse.Namespace) -> None:
    if args.sft and args.format in PREFERENCE_FORMATS[1:]:
        raise ValueError(f"--format {args.format} is a preference format; with --sft use one of "
                         f"{', '.join(SFT_FORMATS)} or auto")
    if not args.sft and args.format in SFT_FORMATS:
        raise ValueError(f"--format {args.format} is an SFT format; add --sft")
    if args.max_rows is not None and args.max_rows < 1:
        raise ValueError("--max-rows must be at least 1")
    if not 0.0 <= getattr(args, "heldout_fraction", 0.0) < 1.0:
        raise ValueError("--heldout-fraction must be within [0, 1)")
    for name in ("max_prompt_tokens", "max_response_tokens", "num_proc"):
        if getattr(args, name, 1) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")


# ---------------------------------------------------------------------------- inspect


def _records(args: argparse.Namespace, report: Any) -> Iterator[dict[str, Any]]:
    from alignment.data import iter_preferences, iter_sft

    common = {"fmt": args.format, "policy": args.policy, "subset": args.subset, "split": args.split,
              "cache_dir": args.cache_dir, "report": report, "max_rows": args.max_rows}
    if args.sft:
        return iter_sft(args.source, **common)
    return iter_preferences(args.source, min_score_gap=args.min_score_gap, **common)


def command_inspect(args: argparse.Namespace) -> int:
    """Stream the source once: counts, drops by reason with examples, lengths; nothing is written."""
    from alignment.data import DropReport
    from alignment.data.report import LengthCollector, format_text

    report = DropReport()
    lengths = LengthCollector()
    tokenizer = _load_tokenizer(args.model, False) if args.model else None
    batch: list[dict[str, Any]] = []
    for record in _records(args, report):
        if tokenizer is None:
            lengths.add_record_chars(record)
            continue
        batch.append(record)
        if len(batch) >= INSPECT_BATCH:
            _add_token_lengths(lengths, batch, tokenizer)
            batch = []
    if batch:
        _add_token_lengths(lengths, batch, tokenizer)
    out = {"sources": {"input": args.source}, "drops": {"input": report.to_dict()},
           "length_unit": "tokens" if tokenizer is not None else "characters", "lengths": lengths.summary()}
    print(json.dumps(out, indent=2, ensure_ascii=False) if args.json else format_text(out))
    return 0


def _add_token_lengths(lengths: Any, batch: list[dict[str, Any]], tokenizer: Any) -> None:
    from alignment.data.prepare import encode_pair_batch, encode_sft_batch

    columns = {key: [r[key] for r in batch] for key in batch[0] if key in ("prompt", "chosen", "rejected",
                                                                         "messages")}
    if "messages" in columns:
        lengths.extend("sft", encode_sft_batch(columns, tokenizer=tokenizer, max_tokens=1 << 30,
                                               truncation="keep_end")["sft_tokens"])
        return
    encoded = encode_pair_batch(columns, tokenizer=tokenizer, max_prompt_tokens=1 << 30,
                                max_response_tokens=1 << 30, truncation="keep_end")
    for name in ("prompt", "chosen", "rejected"):
        lengths.extend(name, encoded[f"{name}_tokens"])


def _load_tokenizer(name: str, trust_remote_code: bool) -> Any:
    """Any model source the pipeline accepts: hub id, folder, s3:// folder or GGUF file (converted once)."""
    from alignment.models.loading import load_tokenizer
    from alignment.models.source import local_model_path

    return load_tokenizer(local_model_path(name), trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------------------- prepare


def command_prepare(args: argparse.Namespace) -> int:
    """Canonical sft.jsonl or train.jsonl + heldout.jsonl, the tokenized cache and report.json."""
    from alignment.data.prepare import PrepareOptions, prepare
    from alignment.data.report import format_text

    options = PrepareOptions(
        fmt="auto" if args.sft else args.format, sft_fmt=args.format if args.sft else "auto", policy=args.policy, min_score_gap=args.min_score_gap,
        subset=args.subset, sft_split=args.split, train_split=args.split, heldout_split=args.heldout_split,
        max_rows=args.max_rows, heldout_fraction=args.heldout_fraction, seed_salt=str(args.seed),
        cache_dir=args.cache_dir, max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens, truncation=args.truncation, num_proc=args.num_proc)
    sources = {"sft": args.source} if args.sft else {"train": args.source, "heldout": args.heldout}
    tokenizer = _load_tokenizer(args.model, args.trust_remote_code) if args.model else None
    result = prepare(sources, args.out, options, tokenizer)
    print(json.dumps(result.report, indent=2, ensure_ascii=False) if args.json else format_text(result.report))
    if not args.json:
        if result.tokenized_dir:
            print(f"tokenized: {result.tokenized_dir}")
        print(f"prepared: {result.dir}/report.json")
    return 0
