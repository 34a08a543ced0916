"""The `alignflow` command: `alignflow run --config configs/quickstart.yaml [--set a.b=v ...]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description="Align language models with preferences.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline once")
    run.add_argument("--config", "-c", help="YAML preset (see configs/); defaults apply where unset")
    run.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one field, e.g. --set preference.method=orpo (repeatable)")
    show = sub.add_parser("config", help="print the resolved config as JSON")
    show.add_argument("--config", "-c")
    show.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    from alignment.config import ConfigError
    from alignment.data import DataError
    from alignment.models import ModelLoadError
    from alignment.tokenization import TemplateError

    return (ConfigError, DataError, ModelLoadError, TemplateError)


def command_run(args: argparse.Namespace) -> int:
    from alignment.config import load_config
    from alignment.preflight import check_inputs

    cfg = load_config(args.config, args.overrides)
    if not cfg.model.name_or_path:  # the local model needs no hub; never let a library reach for it
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_inputs(cfg)
    from flows.pipeline import alignment_pipeline

    result = alignment_pipeline(cfg)
    # The temporary Prefect server logs its shutdown at exit; the summary line must stay the last line.
    logging.getLogger("prefect").setLevel(logging.WARNING)
    print(f"summary: {result['summary_path']}", flush=True)
    return 0


def command_config(args: argparse.Namespace) -> int:
    from alignment.config import load_config

    print(json.dumps(load_config(args.config, args.overrides).model_dump(mode="json"), indent=2))
    return 0


COMMANDS = {"run": command_run, "config": command_config}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
