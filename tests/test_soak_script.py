"""scripts/soak.py: its measurements (file descriptors, disk usage, leftover processes), the report's verdicts on
synthetic data, and — slow — two real runs against a stack it starts on free ports."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


soak = load_soak()


# ---------------------------------------------------------------------------- measurements


def test_count_fds_sees_files_opened_and_closed(tmp_path: Path) -> None:
    before = soak.count_fds(os.getpid())
    handles = [open(tmp_path / f"f{i}", "w") for i in range(5)]  # noqa: SIM115
    assert soak.count_fds(os.getpid()) == before + 5
    for handle in handles:
        handle.close()
    assert soak.count_fds(os.getpid()) == before
    assert soak.count_fds(2**22 + 12345) is None  # no such process


def test_disk_usage_counts_blocks_once_and_not_sparse_holes(tmp_path: Path) -> None:
    assert soak.disk_usage(tmp_path / "missing") == 0
    empty = soak.disk_usage(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(os.urandom(256 * 1024))
    with_data = soak.disk_usage(tmp_path)
    assert 256 * 1024 <= with_data - empty < 256 * 1024 + 64 * 1024
    os.link(tmp_path / "sub" / "data.bin", tmp_path / "hardlink.bin")  # the same inode: counted once
    (tmp_path / "link").symlink_to(tmp_path / "sub")  # not followed
    with open(tmp_path / "sparse.bin", "wb") as fh:
        fh.truncate(100 * MIB)
    assert soak.disk_usage(tmp_path) - with_data < MIB


def test_leftover_processes_found_by_marker_and_group_then_terminated() -> None:
    """A run that leaves an orphan behind (double fork): found through its environment marker."""
    token = "test-" + os.urandom(4).hex()
    env = {**os.environ, soak.MARKER: token}
    proc = subprocess.Popen(["sh", "-c", "sleep 60 &"], env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    proc.wait(timeout=10)
    left = soak.wait_for_exit(lambda: soak.leftover_processes(token, proc.pid), 0.5)
    assert len(left) == 1 and "sleep 60" in soak.cmdline(left[0])
    assert soak.processes_with_marker(token) == left and soak.group_pids(proc.pid) == left
    soak.terminate(left, grace=5)
    assert soak.leftover_processes(token, proc.pid) == []


def test_user_process_count_and_liveness() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert soak.user_process_count() >= 2  # this test and the child, at least
        assert soak.live(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not soak.live(child.pid)


def test_run_once_reads_the_summary_and_records_a_leak(tmp_path: Path) -> None:
    out = tmp_path / "run-01"
    out.mkdir()
    summary = out / "summary.json"
    summary.write_text(json.dumps({"metrics": {"compare/win_rate": 0.75}, "registered_model": {"version": 3,
                                                                                             "aliases": ["candidate"]}}))
    (out / "model.bin").write_bytes(b"x" * 50_000)
    script = f"import subprocess; subprocess.Popen(['sleep', '60']); print('working'); print('summary: {summary}')"
    record = soak.run_once(1, [sys.executable, "-c", script], out, timeout=60, grace=0.5)
    assert record.exit_code == 0 and record.error is None and record.summary_path == str(summary)
    assert record.metrics == {"compare/win_rate": 0.75} and record.registered_version == "3"
    assert record.aliases == ["candidate"] and record.output_bytes >= 50_000
    assert len(record.leaked) == 1 and "sleep 60" in record.leaked[0]["cmdline"]
    assert not soak.live(record.leaked[0]["pid"])  # terminated after it was recorded
    assert Path(record.log).read_text().startswith("working")


def test_run_once_failure_and_timeout(tmp_path: Path) -> None:
    failed = soak.run_once(1, [sys.executable, "-c", "import sys; print('error: bad'); sys.exit(2)"],
                           tmp_path / "run-01", timeout=60, grace=0.2)
    assert failed.exit_code == 2 and "error: bad" in failed.error and failed.leaked == []
    slow = soak.run_once(2, [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "run-02",
                         timeout=1, grace=0.2)
    assert slow.exit_code is None and slow.error == "timed out" and slow.leaked == []


def test_summary_line_and_command() -> None:
    assert soak.summary_path_from("using the stack\nsummary: /x/summary.json\n\n") == "/x/summary.json"
    assert soak.summary_path_from("summary: /x\nmore") is None and soak.summary_path_from("") is None
    cmd = soak.run_command("configs/quickstart.yaml", Path("/s"), Path("/soak/run-01"), ["run.output_dir=/no", "a.b=1"])
    assert cmd[-6:] == ["--set", "run.output_dir=/no", "--set", "a.b=1", "--set", "run.output_dir=/soak/run-01"]
    assert cmd[cmd.index("--stack-dir") + 1] == "/s" and cmd[cmd.index("--config") + 1] == "configs/quickstart.yaml"


def test_runs_must_be_positive() -> None:
    with pytest.raises(SystemExit, match="--runs must be at least 1"):
        soak.main(["--runs", "0"])


# ---------------------------------------------------------------------------- the report, on synthetic data


def snap(fds: dict[str, int], stack: int, soak_disk: int = 0, s3: int = 0, gone: tuple[str, ...] = ()) -> object:
    services = {name: soak.ServiceSnapshot(pids=[] if name in gone else [100 + i], fds=n, rss=50 * MIB)
                for i, (name, n) in enumerate(fds.items())}
    return soak.Snapshot(at=0.0, services=services, user_processes=40, stack_disk={"s3": stack // 2, "total": stack},
                         soak_disk=soak_disk, s3={"mlflow": {"objects": 1, "bytes": s3}})


def run(index: int, code: int | None = 0, kept: int = 10 * MIB, version: str | None = None,
        leaked: list | None = None) -> object:
    return soak.RunRecord(index=index, exit_code=code, wall_s=60.0 + index, output_dir=f"/soak/run-{index:02d}",
                          log="", registered_version=version or str(index), output_bytes=kept, leaked=leaked or [],
                          metrics={"compare/win_rate": 0.9})


def healthy_soak(runs: int = 3) -> tuple[list, list]:
    """Each run keeps a 10 MiB folder and adds 5 MiB to S3; the stack folder grows by the S3 bytes + 1 MiB."""
    snaps = [snap({"mlflow": 30, "s3": 20}, stack=100 * MIB)]
    for i in range(1, runs + 1):
        snaps.append(snap({"mlflow": 34 + (i % 2), "s3": 21}, stack=(100 + 6 * i) * MIB, soak_disk=10 * MIB * i,
                          s3=5 * MIB * i))
    return snaps, [run(i) for i in range(1, runs + 1)]


def test_report_of_a_healthy_soak() -> None:
    snaps, runs = healthy_soak()
    report = soak.build_report(snaps, runs)
    assert report["ok"] and report["failures"] == [] and report["leaked"] == []
    assert all(line.startswith("OK") for line in report["verdicts"]), report["verdicts"]
    assert report["fds"]["mlflow"]["growth"] == 5 and not report["fds"]["mlflow"]["suspect_leak"]
    disk = report["disk"]
    assert disk["growth"] == 48 * MIB and disk["kept"] == 45 * MIB and disk["other"] == 3 * MIB and disk["ok"]
    assert [d["other"] for d in disk["per_run"]] == [MIB] * 3
    assert report["wall_s"]["median"] == 62.0 and report["versions"] == ["1", "2", "3"]
    table = soak.format_table(runs, snaps, report)
    assert "fd mlflow" in table and "win rate" in table and "0.900" in table and table.endswith(report["verdicts"][-1])


def test_report_fails_on_a_failed_run_or_a_leak() -> None:
    snaps, runs = healthy_soak()
    runs[1] = run(2, code=1)
    runs[2] = run(3, leaked=[{"pid": 4242, "cmdline": "python -m alignment.worker"}])
    report = soak.build_report(snaps, runs)
    assert not report["ok"] and report["failures"] == [2]
    assert report["leaked"] == [{"run": 3, "pid": 4242, "cmdline": "python -m alignment.worker"}]
    assert report["verdicts"][0].startswith("FAIL runs: 2/3") and report["verdicts"][1].startswith("FAIL processes")
    runs[1] = run(2, code=None)
    assert "timeout" in soak.format_table(runs, snaps, soak.build_report(snaps, runs))


def test_report_warns_on_steady_fd_growth_but_not_on_warm_up_or_noise() -> None:
    snaps, runs = healthy_soak(runs=4)
    for i, s in enumerate(snaps[1:], start=1):
        s.services["s3"].fds = 20 + 10 * i  # +10 every run: 40 after the first run
    report = soak.build_report(snaps, runs, soak.Limits(fd_tolerance=16))
    assert report["fds"]["s3"]["suspect_leak"] and report["fds"]["s3"]["growth_after_first_run"] == 30
    assert any(v.startswith("WARN file descriptors") and "s3" in v for v in report["verdicts"])
    assert report["ok"]  # a warning, not a failure
    snaps[1].services["s3"].fds = 200  # a big warm-up step, then flat
    for s in snaps[2:]:
        s.services["s3"].fds = 200
    assert not soak.build_report(snaps, runs)["fds"]["s3"]["suspect_leak"]
    series = [50, 70, 60, 80]  # up and down: not a leak
    for s, n in zip(snaps[1:], series, strict=True):
        s.services["s3"].fds = n
    assert not soak.build_report(snaps, runs)["fds"]["s3"]["suspect_leak"]


def test_report_warns_when_disk_grows_beyond_the_artifacts_kept() -> None:
    snaps, runs = healthy_soak()
    snaps[-1].stack_disk = {"s3": 0, "total": 400 * MIB}  # +300 MiB nobody keeps
    report = soak.build_report(snaps, runs, soak.Limits(disk_slack_mib=32))
    assert not report["disk"]["ok"] and report["ok"]
    assert any(v.startswith("WARN disk") for v in report["verdicts"])


def test_report_warns_when_a_service_goes_away_or_versions_repeat() -> None:
    snaps, runs = healthy_soak()
    snaps[2] = snap({"mlflow": 30, "s3": 20}, stack=112 * MIB, soak_disk=20 * MIB, s3=10 * MIB, gone=("mlflow",))
    runs[2] = run(3, version="2")
    verdicts = soak.build_report(snaps, runs)["verdicts"]
    assert any("gone" in v and "mlflow" in v for v in verdicts)
    assert any(v.startswith("WARN registry") for v in verdicts)


# ---------------------------------------------------------------------------- two real runs


@pytest.mark.slow
@pytest.mark.integration
def test_two_runs_against_a_stack_the_script_starts(tmp_path: Path) -> None:
    from flows.stack import Stack, free_ports
    from tests.integration.stackutil import SMALL, consecutive_free_base

    prefect, mlflow_port, s3, arena = free_ports(4)  # every service on a free port: a stack left up by
    # `make demo` holds the defaults, and this stack's arena must not meet that one
    stack_dir, out = tmp_path / "stack", tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--runs", "2", "--stack-dir", str(stack_dir),
           "--soak-dir", str(tmp_path / "soak"), "--json", str(out), "--prefect-port", str(prefect),
           "--mlflow-port", str(mlflow_port), "--s3-port", str(s3), "--weed-port-base", str(consecutive_free_base()),
           "--arena-port", str(arena),
           *(arg for item in SMALL for arg in ("--set", item))]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1500)
    finally:
        leftover = Stack.load(stack_dir)
        groups = [info["pgid"] for info in leftover.read_state()["services"].values()]
        leftover.down(echo=lambda _: None)  # only if the script died before its own teardown
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    record = json.loads(out.read_text())
    report = record["report"]
    assert report["failures"] == [] and report["leaked"] == [] and report["runs"] == 2
    assert len(set(report["versions"])) == 2
    assert report["stack"]["started_by_soak"] and report["stack"]["stopped"] is True and groups == []
    stack_pids = [pid for svc in record["snapshots"][-1]["services"].values() for pid in svc["pids"]]
    assert stack_pids and not any(soak.live(pid) for pid in stack_pids)  # the script stopped what it started
    assert set(report["fds"]) == {"s3", "mlflow", "prefect", "worker-cpu", "worker-gpu", "arena"}
    assert all(r["exit_code"] == 0 and r["metrics"].get("compare/win_rate") is not None for r in record["runs"])
    assert report["disk"]["run_dirs"] > 0 and report["disk"]["s3"] > 0
    print(proc.stdout[-3000:], f"\n(soak test took {time.monotonic() - started:.0f} s)")
