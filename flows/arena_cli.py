"""`alignflow arena serve | export | stats`: the side-by-side arena (arena/), its export of votes as preference
data and its human win rates. Defaults follow the local stack: its MLflow server, its S3 and the database
`<stack dir>/arena/arena.db`."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def add_arena_commands(subparsers: Any) -> dict[str, Handler]:
    arena = subparsers.add_parser("arena", help="people compare two registered models blind; votes become data")
    sub = arena.add_subparsers(dest="arena_command", required=True)
    serve = sub.add_parser("serve", help="the arena web page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--model-name", action="append", help="only these registered models (repeatable)")
    serve.add_argument("--max-new-tokens", type=int, default=64)
    serve.add_argument("--sample", action="store_true", help="sample (temperature, top-p) instead of greedy")
    serve.add_argument("--temperature", type=float, default=0.7)
    serve.add_argument("--top-p", type=float, default=1.0)
    serve.add_argument("--max-prompt-chars", type=int, default=2000)
    serve.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    serve.add_argument("--users-env", help="environment variable holding `login:password,…`: basic auth on, the "
                                           "login is the annotator (production)")
    export = sub.add_parser("export", help="write decided votes as a preference dataset to S3")
    export.add_argument("--bucket", help="default $ALIGNFLOW_S3_BUCKET or alignflow")
    stats = sub.add_parser("stats", help="human win rates per pair of models and annotator agreement")
    stats.add_argument("--tag", action="store_true", help="also set human.* tags on the registered versions")
    stats.add_argument("--json", action="store_true")
    for p in (serve, export, stats):
        p.add_argument("--db", help="SQLAlchemy URL or SQLite file (default $ALIGNFLOW_ARENA_DB or "
                                    "<stack dir>/arena/arena.db)")
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or the local stack)")
        p.add_argument("--stack-dir", help="local stack directory (default .alignflow/stack)")
    return {"arena": command_arena}


def resolve(args: argparse.Namespace) -> tuple[str, str | None]:
    """(database URL, tracking URI), using the local stack's settings when it runs."""
    from arena.store import sqlite_url
    from flows.stack import Stack

    stack = Stack.load(args.stack_dir)
    if stack.read_state()["services"]:
        for key, value in stack.client_env().items():
            if key != "PREFECT_API_URL":
                os.environ.setdefault(key, value)
    db = args.db or os.environ.get("ALIGNFLOW_ARENA_DB") or str(stack.dir / "arena" / "arena.db")
    url = db if "://" in db else sqlite_url(db)
    return url, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def command_arena(args: argparse.Namespace) -> int:
    from tasks.promotion import PromotionError

    url, tracking = resolve(args)
    if args.arena_command == "serve":
        return serve(args, url, tracking)
    if not tracking and (args.arena_command == "export" or args.tag):
        raise PromotionError("no MLflow tracking server: start the local stack, set MLFLOW_TRACKING_URI or pass "
                             "--tracking-uri")
    if args.arena_command == "export":
        from tasks.arena import export_votes

        out = export_votes(url, bucket=args.bucket, tracking_uri=tracking)
        c = out.counts
        print(f"{c['pairs']} preference pairs from {c['votes']} votes ({c['ties']} ties, {c['both_bad']} both bad, "
              f"{c['identical']} identical answers: not paired); MLflow run {out.run_id}")
        print(f"use it: --set data.train_path={out.latest_uri}  (this version: {out.uri})")
        if out.unpaired_uri:
            print(f"{c['unpaired']} unpaired examples (both-bad votes, single-answer ratings), for KTO: "
                  "--set preference.method=kto "
                  f"--set data.unpaired_path={out.unpaired_uri}")
        print(f"export: {out.uri}")
        return 0
    from arena.stats import annotator_agreement, pair_stats
    from arena.store import open_store

    votes = open_store(url).decided()
    pairs, annotators = pair_stats(votes), annotator_agreement(votes)
    if args.tag:
        from tasks.arena import tag_versions

        tag_versions(url, tracking)
    if args.json:
        print(json.dumps({"pairs": pairs, "annotators": annotators}, indent=1))
        return 0
    for r in pairs:
        print(f"{r['model']:28s} vs {r['opponent']:28s} {r['wins']:3d} W {r['ties'] + r['both_bad']:3d} T "
              f"{r['losses']:3d} L  win rate {r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    for a in annotators:
        agree = "–" if a["agreement"] is None else f"{a['agreement']:.2f}"
        print(f"annotator {a['annotator']}: {a['votes']} votes, agreement {agree} over {a['compared']} shared")
    if not pairs:
        print("no votes yet")
    return 0


def serve(args: argparse.Namespace, url: str, tracking: str | None) -> int:
    from tasks.promotion import PromotionError

    if not tracking:
        raise PromotionError("no MLflow registry: start the local stack, set MLFLOW_TRACKING_URI or pass "
                             "--tracking-uri")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import uvicorn

    from arena.app import ArenaSettings, create_app
    from arena.catalog import Catalog
    from arena.generation import Sampling
    from arena.store import open_store

    torch.set_num_threads(args.threads)
    users = None
    if args.users_env:
        raw = os.environ.get(args.users_env, "")
        users = dict(item.split(":", 1) for item in raw.split(",") if ":" in item)
        if not users:
            raise PromotionError(f"${args.users_env} holds no `login:password` entries")
    sampling = Sampling(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                        top_p=args.top_p)
    app = create_app(open_store(url), Catalog(tracking, args.model_name),
                     ArenaSettings(sampling=sampling, max_prompt_chars=args.max_prompt_chars, users=users))
    print(f"arena on http://{args.host}:{args.port} (votes in {url.split('@')[-1]}, registry {tracking})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
