"""Soak test: the quickstart run N times back to back against the local stack, as a user runs it.

    python scripts/soak.py --runs 10 [--stack-dir D] [--keep-stack] [--json soak.json] [--set key=value ...]

Brings the stack up (or uses the running one), records a baseline (each service's process group, its PIDs,
open file descriptors and resident memory; the user's process count; disk usage of the stack folder and of
the soak folder; bytes in the S3 buckets), then runs `alignflow run --config … --set run.output_dir=<soak
folder>/run-NN` N times, each in a session of its own with a marker in its environment. After each run it
records the exit code, wall time, headline metrics and registered version from the run's summary, the file
descriptors of every stack process, any process of the run still alive (found by the marker or the run's
process group; a leak, terminated after it is recorded) and disk usage.

The report (a table on stdout, everything in `--json`) gives failures, wall times, file-descriptor growth per
service (baseline -> last, and after the first run -> last, which leaves out warm-up), leaked processes, disk
growth in total and per run against what the runs keep (their output folders plus the S3 buckets' growth),
and verdict lines. Exit 1 when a run failed or a process leaked; file-descriptor and disk findings are
warnings. The stack is stopped at the end only if this script started it and `--keep-stack` is not given.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MARKER = "ALIGNFLOW_SOAK_RUN"  # set in each run's environment; inherited by everything the run starts
STACK_ENV = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # the run finds the stack through --stack-dir
MIB = 1024 * 1024


# ---------------------------------------------------------------------------- processes (Linux /proc)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def live(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group."""
    return sorted(pid for pid in all_pids() if (s := proc_stat(pid)) and s[2] == pgid and s[0] not in ("Z", "X"))


def count_fds(pid: int) -> int | None:
    """Open file descriptors of a process (None when it is gone or not ours to read)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def user_process_count(uid: int | None = None) -> int:
    """Live processes of the user (by real uid)."""
    uid = os.getuid() if uid is None else uid
    count = 0
    for pid in all_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid and fields.get("State", "").strip()[:1] not in ("Z", "X"):
            count += 1
    return count


def processes_with_marker(token: str) -> list[int]:
    """Live processes whose environment holds MARKER=token (a run and everything it started)."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and live(pid):
            found.append(pid)
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def leftover_processes(token: str, pgid: int) -> list[int]:
    return sorted(set(processes_with_marker(token)) | set(group_pids(pgid)))


def wait_for_exit(find: Callable[[], list[int]], grace: float) -> list[int]:
    """Processes `find` still reports after `grace` seconds (polled)."""
    deadline = time.monotonic() + grace
    while True:
        left = find()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.25)


def terminate(pids: Iterable[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after `grace` seconds."""
    left = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        targets = left
        left = wait_for_exit(lambda: [p for p in targets if live(p)], grace)  # noqa: B023 - used at once
        if not left:
            return


# ---------------------------------------------------------------------------- disk and S3


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under `path` (st_blocks, each inode once; sparse files count what they use).
    A missing path is 0; files vanishing during the walk are skipped."""
    root = Path(path)
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            st = current.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        if current.is_dir() and not current.is_symlink():
            try:
                stack.extend(current.iterdir())
            except OSError:
                continue
    return total


def bucket_bytes(env: dict[str, str], buckets: Sequence[str]) -> dict[str, dict[str, int]]:
    """Objects and bytes per bucket, listed through the stack's S3 endpoint."""
    from flows.stack import s3_client

    client = s3_client(env)
    out = {}
    for bucket in buckets:
        objects = size = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                objects += 1
                size += obj["Size"]
        out[bucket] = {"objects": objects, "bytes": size}
    return out


# ---------------------------------------------------------------------------- snapshots


@dataclass
class ServiceSnapshot:
    pids: list[int]
    fds: int
    rss: int


@dataclass
class Snapshot:
    """The machine's state at one moment: per stack service, the user's processes, disk and S3."""

    at: float
    services: dict[str, ServiceSnapshot]
    user_processes: int
    stack_disk: dict[str, int]  # top-level entry of the stack folder -> bytes; "total" too
    soak_disk: int
    s3: dict[str, dict[str, int]]


def snapshot_services(pgids: dict[str, int]) -> dict[str, ServiceSnapshot]:
    out = {}
    for name, pgid in pgids.items():
        pids = group_pids(pgid)
        out[name] = ServiceSnapshot(pids=pids, fds=sum(count_fds(p) or 0 for p in pids),
                                    rss=sum(rss_bytes(p) for p in pids))
    return out


def stack_disk(stack_dir: Path) -> dict[str, int]:
    parts = {p.name: disk_usage(p) for p in sorted(stack_dir.iterdir())} if stack_dir.is_dir() else {}
    return {**parts, "total": disk_usage(stack_dir)}


def take_snapshot(pgids: dict[str, int], stack_dir: Path, soak_dir: Path, env: dict[str, str],
                  buckets: Sequence[str]) -> Snapshot:
    return Snapshot(at=time.time(), services=snapshot_services(pgids), user_processes=user_process_count(),
                    stack_disk=stack_disk(stack_dir), soak_disk=disk_usage(soak_dir), s3=bucket_bytes(env, buckets))


# ---------------------------------------------------------------------------- one run


@dataclass
class RunRecord:
    index: int
    exit_code: int | None  # None: killed at the timeout
    wall_s: float
    output_dir: str
    log: str
    summary_path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    registered_version: str | None = None
    aliases: list[str] = field(default_factory=list)
    leaked: list[dict[str, Any]] = field(default_factory=list)
    output_bytes: int = 0
    error: str | None = None


def summary_path_from(stdout: str) -> str | None:
    """The `summary: <path>` the CLI prints as its last line."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if lines and lines[-1].startswith("summary: "):
        return lines[-1].removeprefix("summary: ").strip()
    return None


def alignflow_command() -> list[str]:
    script = Path(sys.executable).parent / "alignflow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "flows.cli"]


def run_command(config: str, stack_dir: Path, output_dir: Path, overrides: Sequence[str]) -> list[str]:
    sets = [*overrides, f"run.output_dir={output_dir}"]  # last: the soak decides where each run writes
    return [*alignflow_command(), "run", "--config", config, "--stack-dir", str(stack_dir),
            *(arg for item in sets for arg in ("--set", item))]


def run_once(index: int, cmd: list[str], output_dir: Path, timeout: float, grace: float) -> RunRecord:
    """One `alignflow run` in a session of its own; its output goes to <output_dir>.log."""
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in STACK_ENV}
    env[MARKER] = token
    log = output_dir.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate(group_pids(proc.pid))
            proc.wait()
            code = None
    record = RunRecord(index=index, exit_code=code, wall_s=round(time.monotonic() - start, 2),
                       output_dir=str(output_dir), log=str(log))
    left = wait_for_exit(lambda: leftover_processes(token, proc.pid), grace)
    record.leaked = [{"pid": pid, "cmdline": cmdline(pid)} for pid in left]
    terminate(left)  # recorded as a leak; not left running
    read_summary(record, log.read_text(errors="replace"))
    record.output_bytes = disk_usage(output_dir)
    return record


def read_summary(record: RunRecord, stdout: str) -> None:
    path = summary_path_from(stdout)
    if record.exit_code != 0:
        tail = [line for line in stdout.splitlines() if line.strip()][-3:]
        record.error = "timed out" if record.exit_code is None else " | ".join(tail)[-500:]
    if path is None:
        record.error = record.error or "no `summary: <path>` line at the end of the output"
        return
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        record.error = record.error or f"summary {path} unreadable: {exc}"
        return
    record.summary_path = path
    record.metrics = summary.get("metrics", {})
    registered = summary.get("registered_model") or {}
    record.registered_version = None if registered.get("version") is None else str(registered["version"])
    record.aliases = list(registered.get("aliases") or [])


# ---------------------------------------------------------------------------- the report (pure)


@dataclass
class Limits:
    fd_tolerance: int = 16  # fds a service may gain after the first run before a warning
    disk_slack_mib: float = 32.0  # growth per run beyond the artifacts kept before a warning


def fd_findings(snapshots: Sequence[Snapshot], limits: Limits) -> dict[str, dict[str, Any]]:
    """Per service: fds at baseline, after each run, growth, and whether it looks like a leak (grew by more
    than the tolerance after the first run, never going down) or the service is gone (its process group
    empty: it died or was restarted under another group)."""
    out: dict[str, dict[str, Any]] = {}
    names = sorted({name for snap in snapshots for name in snap.services})
    for name in names:
        series = [snap.services[name].fds if name in snap.services else None for snap in snapshots]
        known = [v for v in series if v is not None]
        after_first = [v for v in series[1:] if v is not None]
        growth_warm = after_first[-1] - after_first[0] if len(after_first) >= 2 else 0
        monotone = all(b >= a for a, b in zip(after_first, after_first[1:], strict=False))
        out[name] = {
            "series": series,
            "growth": known[-1] - known[0] if known else 0,
            "growth_after_first_run": growth_warm,
            "suspect_leak": growth_warm > limits.fd_tolerance and monotone,
            "gone": any(name not in snap.services or not snap.services[name].pids for snap in snapshots),
            "rss_mib": [round(snap.services[name].rss / MIB, 1) if name in snap.services else None
                        for snap in snapshots],
        }
    return out


def disk_findings(snapshots: Sequence[Snapshot], runs: Sequence[RunRecord], limits: Limits) -> dict[str, Any]:
    """Growth of the stack and soak folders against what the runs keep (output folders + S3 growth)."""
    first, last = snapshots[0], snapshots[-1]

    def s3_total(snap: Snapshot) -> int:
        return sum(b["bytes"] for b in snap.s3.values())

    per_run = []
    for before, after, run in zip(snapshots, snapshots[1:], runs, strict=False):
        growth = (after.stack_disk.get("total", 0) - before.stack_disk.get("total", 0)
                  + after.soak_disk - before.soak_disk)
        kept = run.output_bytes + s3_total(after) - s3_total(before)
        per_run.append({"run": run.index, "growth": growth, "kept": kept, "other": growth - kept,
                        "run_dir": run.output_bytes, "s3": s3_total(after) - s3_total(before)})
    growth = last.stack_disk.get("total", 0) - first.stack_disk.get("total", 0) + last.soak_disk - first.soak_disk
    kept = sum(r.output_bytes for r in runs) + s3_total(last) - s3_total(first)
    parts = sorted((set(first.stack_disk) | set(last.stack_disk)) - {"total"})
    other = growth - kept
    allowed = limits.disk_slack_mib * MIB * max(1, len(runs))
    return {
        "growth": growth, "kept": kept, "other": other, "allowed_other": allowed,
        "run_dirs": sum(r.output_bytes for r in runs), "s3": s3_total(last) - s3_total(first),
        "s3_buckets": {b: last.s3.get(b, {}).get("bytes", 0) - first.s3.get(b, {}).get("bytes", 0)
                       for b in sorted(set(first.s3) | set(last.s3))},
        "stack_parts": {p: last.stack_disk.get(p, 0) - first.stack_disk.get(p, 0) for p in parts},
        "per_run": per_run,
        "ok": other <= allowed,
    }


def build_report(snapshots: Sequence[Snapshot], runs: Sequence[RunRecord], limits: Limits | None = None) -> dict[str, Any]:
    """Findings and verdict lines from the baseline, the snapshot after each run and the run records."""
    limits = limits or Limits()
    failures = [r.index for r in runs if r.exit_code != 0]
    leaked = [{"run": r.index, **p} for r in runs for p in r.leaked]
    walls = [r.wall_s for r in runs]
    fds = fd_findings(snapshots, limits)
    disk = disk_findings(snapshots, runs, limits)
    versions = [r.registered_version for r in runs if r.exit_code == 0]
    distinct_versions = len(set(versions)) == len(versions) and None not in versions
    verdicts = [
        f"{'OK  ' if not failures else 'FAIL'} runs: {len(runs) - len(failures)}/{len(runs)} succeeded"
        + (f" (failed: {', '.join(map(str, failures))})" if failures else ""),
        f"{'OK  ' if not leaked else 'FAIL'} processes: "
        + ("no process of any run outlived it" if not leaked else f"{len(leaked)} leaked (terminated after recording)"),
    ]
    suspects = [n for n, f in fds.items() if f["suspect_leak"]]
    gone = [n for n, f in fds.items() if f["gone"]]
    growth_text = ", ".join(f"{n} {f['growth']:+d}" for n, f in fds.items())
    verdicts.append(f"{'WARN' if suspects else 'OK  '} file descriptors (baseline -> last): {growth_text or 'none'}"
                    + (f"; growing every run past {limits.fd_tolerance}: {', '.join(suspects)}" if suspects else ""))
    if gone:
        verdicts.append(f"WARN stack services gone (died or restarted) during the soak: {', '.join(gone)}")
    verdicts.append(
        f"{'OK  ' if disk['ok'] else 'WARN'} disk: grew {mib(disk['growth'])}, artifacts kept {mib(disk['kept'])} "
        f"(run folders {mib(disk['run_dirs'])} + S3 {mib(disk['s3'])}), other {mib(disk['other'])} "
        f"(allowed {mib(disk['allowed_other'])})")
    if runs and not distinct_versions:
        verdicts.append("WARN registry: the successful runs did not each register a new version")
    return {
        "runs": len(runs), "failures": failures, "leaked": leaked,
        "wall_s": {"per_run": walls, "min": min(walls, default=0), "median": statistics.median(walls) if walls else 0,
                   "max": max(walls, default=0), "total": round(sum(walls), 2)},
        "fds": fds, "disk": disk,
        "user_processes": [s.user_processes for s in snapshots],
        "versions": versions,
        "verdicts": verdicts,
        "ok": not failures and not leaked,
    }


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def format_table(runs: Sequence[RunRecord], snapshots: Sequence[Snapshot], report: dict[str, Any]) -> str:
    """Per run: exit, wall time, headline metrics, version, stack fds, leaks and disk; then the verdicts."""
    services = sorted(report["fds"])
    head = ["run", "exit", "wall s", "win rate", "reward acc", "version", *[f"fd {s}" for s in services], "leaked",
            "disk +MiB", "kept MiB"]
    rows = [["base", "", "", "", "", "", *[str(snapshots[0].services[s].fds) if s in snapshots[0].services else "-"
                                          for s in services], "", "", ""]]
    per_run = {d["run"]: d for d in report["disk"]["per_run"]}
    for run, snap in zip(runs, snapshots[1:], strict=False):
        disk = per_run.get(run.index, {})
        rows.append([
            str(run.index), "timeout" if run.exit_code is None else str(run.exit_code), f"{run.wall_s:.1f}",
            fmt(run.metrics.get("compare/win_rate")), fmt(run.metrics.get("eval/rewards/accuracies")),
            run.registered_version or "-",
            *[str(snap.services[s].fds) if s in snap.services else "-" for s in services],
            str(len(run.leaked)), f"{disk.get('growth', 0) / MIB:.1f}", f"{disk.get('kept', 0) / MIB:.1f}",
        ])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    wall = report["wall_s"]
    lines.append(f"wall time per run: min {wall['min']:.1f} s, median {wall['median']:.1f} s, max {wall['max']:.1f} s")
    lines += report["verdicts"]
    return "\n".join(lines)


def fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("-" if value is None else str(value))


# ---------------------------------------------------------------------------- the stack


def bring_up(stack: Any, ports: dict[str, int | None], echo: Callable[[str], None]) -> list[str]:
    """Use the running stack, or start what is not running; the names of the services this call started."""
    if stack.running():
        echo(f"using the running stack in {stack.dir}")
        return []
    for name, value in ports.items():
        if value is not None:
            setattr(stack.ports, name, value)
    before = {n: s["pgid"] for n, s in stack.read_state()["services"].items()}
    stack.up(echo=lambda line: echo(f"stack: {line}"))
    after = {n: s["pgid"] for n, s in stack.read_state()["services"].items()}
    return [n for n, pgid in after.items() if before.get(n) != pgid]


def tear_down(stack: Any, started: Sequence[str], echo: Callable[[str], None]) -> bool:
    """Stop the services this script started; True when none of their processes is left."""
    from flows.stack import group_alive, stop_group

    state = stack.read_state()
    pgids = []
    for name in reversed(list(started)):
        info = state["services"].pop(name, None)
        if info:
            stop_group(info["pgid"])
            pgids.append(info["pgid"])
            echo(f"stack: {name} stopped")
    stack.write_state(state)
    return not any(group_alive(pgid) for pgid in pgids)


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="back-to-back runs (default 10)")
    parser.add_argument("--config", default="configs/quickstart.yaml", help="preset (default configs/quickstart.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable); run.output_dir is set by the soak")
    parser.add_argument("--stack-dir", help="stack folder (default .alignflow/stack or $ALIGNFLOW_STACK_DIR)")
    parser.add_argument("--keep-stack", action="store_true", help="leave a stack this script started running")
    parser.add_argument("--soak-dir", help="where the runs write (default runs/soak-<time>)")
    parser.add_argument("--json", help="write the whole record (baseline, runs, snapshots, report) here")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds a run's children get to exit after it")
    parser.add_argument("--fd-tolerance", type=int, default=Limits.fd_tolerance,
                        help="fds a stack service may gain after the first run before a warning (default 16)")
    parser.add_argument("--disk-slack-mib", type=float, default=Limits.disk_slack_mib,
                        help="disk growth per run beyond the artifacts kept before a warning (default 32)")
    for flag in ("prefect-port", "mlflow-port", "s3-port", "weed-port-base", "arena-port"):
        parser.add_argument(f"--{flag}", type=int, help="when this script starts the stack (as alignflow stack up)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        raise SystemExit("soak.py: --runs must be at least 1")
    from flows.stack import BUCKETS, Stack

    def echo(line: str) -> None:
        print(line, flush=True)

    stack = Stack.load(args.stack_dir)
    soak_dir = Path(args.soak_dir or f"runs/soak-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    soak_dir.mkdir(parents=True, exist_ok=True)
    ports = {"prefect": args.prefect_port, "mlflow": args.mlflow_port, "s3": args.s3_port,
             "weed_base": args.weed_port_base, "arena": args.arena_port}
    started = bring_up(stack, ports, echo)
    runs: list[RunRecord] = []
    snapshots: list[Snapshot] = []
    stopped_clean = None
    try:
        env = stack.client_env()
        pgids = {name: info["pgid"] for name, info in stack.read_state()["services"].items()}
        snapshot = lambda: take_snapshot(pgids, stack.dir, soak_dir, env, BUCKETS)  # noqa: E731
        snapshots.append(snapshot())
        echo(f"baseline: {sum(len(s.pids) for s in snapshots[0].services.values())} stack processes, "
             f"fds {', '.join(f'{n} {s.fds}' for n, s in snapshots[0].services.items())}")
        for index in range(1, args.runs + 1):
            out = soak_dir / f"run-{index:02d}"
            record = run_once(index, run_command(args.config, stack.dir, out, args.overrides), out, args.timeout,
                              args.grace)
            runs.append(record)
            snapshots.append(snapshot())
            echo(f"run {index}/{args.runs}: exit {record.exit_code}, {record.wall_s:.1f} s, version "
                 f"{record.registered_version}, leaked {len(record.leaked)}"
                 + (f" — {record.error}" if record.error else ""))
    finally:
        if started and not args.keep_stack:
            stopped_clean = tear_down(stack, started, echo)
    report = build_report(snapshots, runs, Limits(args.fd_tolerance, args.disk_slack_mib))
    report["stack"] = {"dir": str(stack.dir), "started_by_soak": started, "stopped": stopped_clean}
    if stopped_clean is False:
        report["verdicts"].append("FAIL stack: processes of the services this script started are still alive")
        report["ok"] = False
    echo(format_table(runs, snapshots, report))
    if args.json:
        record = {"args": vars(args), "soak_dir": str(soak_dir), "report": report,
                  "runs": [asdict(r) for r in runs], "snapshots": [asdict(s) for s in snapshots]}
        Path(args.json).write_text(json.dumps(record, indent=2))
        echo(f"json: {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
