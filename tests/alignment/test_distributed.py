"""Multi-process training on CPU: 2 torchrun processes on gloo against 1 process with the same global batch,
DPO through run_preference in 2 processes with its metrics forwarded from rank 0's JSONL file, and the parent
side of the launcher (commands, JSONL tailing, errors)."""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

import pytest
from torch.testing import assert_close

from alignment.config import ConfigError, PipelineConfig, load_config
from alignment.data import read_jsonl
from alignment.data.tokenization import IGNORE_INDEX, encode_sft
from alignment.models.loading import fingerprint_model, load_causal_lm
from alignment.models.tiny import build_model
from alignment.records import ModelRef, PreparedData
from alignment.stages import prepare_data, run_preference, run_sft
from alignment.training import distributed
from alignment.training.distributed import build_command, forward_record, launch_training
from alignment.training.tracking import InMemoryLogger, JsonlMetricsLogger, read_new_records

SFT_STEPS, DPO_STEPS = 6, 3
COMMON = ["run.torch_threads=1", "sft.optim.learning_rate=1e-3", "sft.optim.warmup_ratio=0.2",
          f"sft.optim.max_steps={SFT_STEPS}", "sft.optim.log_every=1", "sft.optim.save_every=3"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, quick_tokenizer) -> tuple[Path, PreparedData, ModelRef]:
    """Quickstart data with SFT rows of one token length and answer length (so the mean of per-process token
    means is the global token mean) and 32 training pairs; the tiny model (hidden 32, 2 layers) on disk."""
    root = tmp_path_factory.mktemp("dist")
    tok = quick_tokenizer
    prepared = prepare_data(load_config(None, []), root / "data")
    rows = read_jsonl(prepared.path("sft"))
    enc = encode_sft(tok, rows, max_tokens=144)
    shapes = [(len(i), sum(t != IGNORE_INDEX for t in lab)) for i, lab in zip(enc["input_ids"], enc["labels"],
                                                                             strict=True)]
    shape, count = collections.Counter(shapes).most_common(1)[0]
    assert count >= 16
    same = [r for r, s in zip(rows, shapes, strict=True) if s == shape][:16]
    prepared.path("sft").write_text("".join(json.dumps(r) + "\n" for r in same))
    pairs = read_jsonl(prepared.path("train"))[:32]
    prepared.path("train").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    prepared = prepared.model_copy(update={"fingerprint": "equal-length-sft"})
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=128, seed=0)
    model.save_pretrained(root / "base", safe_serialization=True)
    tok.save_pretrained(root / "base")
    base = ModelRef(path=str(root / "base"), fingerprint=fingerprint_model(str(root / "base")))
    return root, prepared, base


def assert_same_weights(a_dir: str, b_dir: str, atol: float) -> None:
    a, b = load_causal_lm(a_dir).state_dict(), load_causal_lm(b_dir).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert_close(a[name], b[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_processes_match_one_with_the_same_global_batch(workspace) -> None:
    """batch 2 x 2 processes (gloo) == batch 4 x 1 process: same rows per step, DDP averages the gradients,
    so losses and weights agree up to float rounding. Metrics logged by rank 0 reach the parent's logger."""
    root, prepared, base = workspace
    one_log, two_log, progress = InMemoryLogger(), InMemoryLogger(), []
    one = run_sft(load_config(None, [*COMMON, "sft.optim.batch_size=4"]), prepared, base, root / "sft1", one_log)
    cfg2 = load_config(None, [*COMMON, "sft.optim.batch_size=2", "training.num_processes=2"])
    two = run_sft(cfg2, prepared, base, root / "sft2", two_log, lambda s, t, m: progress.append((s, t, m["loss"])))

    print(f"final loss: 1 process {one.final_metrics['loss']:.6f}, 2 processes {two.final_metrics['loss']:.6f}")
    assert one.steps == two.steps == SFT_STEPS
    assert abs(one.final_metrics["loss"] - two.final_metrics["loss"]) < 1e-4
    assert_same_weights(one.model.path, two.model.path, atol=1e-5)
    assert two.tokens == one.tokens  # summed over both processes
    assert two.model.fingerprint == fingerprint_model(two.model.path)
    # every step's metrics were forwarded, once, in order, with the same values as in-process
    assert [s for s, _ in two_log.records] == [s for s, _ in one_log.records] == list(range(1, SFT_STEPS + 1))
    for (_, m1), (_, m2) in zip(one_log.records, two_log.records, strict=True):
        assert abs(m1["loss"] - m2["loss"]) < 1e-4 and abs(m1["learning_rate"] - m2["learning_rate"]) < 1e-12
    assert [(s, t) for s, t, _ in progress] == [(s, SFT_STEPS) for s in range(1, SFT_STEPS + 1)]
    ckpt = root / "sft2" / "checkpoints" / f"step-{SFT_STEPS:07d}"
    assert {p.name for p in ckpt.glob("random_states_*")} == {"random_states_0.pkl", "random_states_1.pkl"}

    # a re-run resumes the finished 2-process run from its checkpoint (load_state on both ranks)
    again = run_sft(cfg2, prepared, base, root / "sft2", InMemoryLogger())
    assert again.resumed_from_step == SFT_STEPS
    assert abs(again.final_metrics["loss"] - two.final_metrics["loss"]) < 1e-9


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dpo_in_two_processes_forwards_its_metrics(workspace) -> None:
    root, prepared, base = workspace
    sft = run_sft(load_config(None, [*COMMON, "sft.optim.max_steps=2"]), prepared, base, root / "ref-sft",
                  InMemoryLogger())
    cfg = load_config(None, ["run.torch_threads=1", "training.num_processes=2", "dpo.optim.batch_size=2",
                             f"dpo.optim.max_steps={DPO_STEPS}", "dpo.optim.log_every=1"])
    logger = InMemoryLogger()
    out = run_preference(cfg, prepared, base, sft, root / "dpo", logger)
    assert out.method == "dpo" and out.steps == DPO_STEPS
    assert [s for s, _ in logger.records] == list(range(1, DPO_STEPS + 1))
    for _, metrics in logger.records:
        assert {"loss", "rewards/margins", "rewards/accuracies", "grad_norm", "tokens_per_sec"} <= metrics.keys()
    assert out.final_metrics["loss"] == pytest.approx(logger.records[-1][1]["loss"])
    assert out.model.fingerprint == fingerprint_model(out.model.path)
    assert (Path(out.model.path) / "model.safetensors").is_file()
    assert len(list((Path(prepared.dir) / "reference").glob("train-*.json"))) == 1  # written once, by rank 0
    lines = (root / "dpo" / "launch" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 * DPO_STEPS  # rank 0 only: one metrics and one progress line per logged step


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kto_in_two_processes_matches_one_with_its_reference_point_averaged(workspace) -> None:
    """KTO's z0 is the mean over the batch of the mismatched pairs' log-ratios; in 2 processes each has half the
    batch and z0 is averaged over them (all-reduce, as TRL's gather), so batch 2 x 2 == batch 4 x 1 up to
    float rounding. Without the averaging each process would use its own half's z0 and the losses differ."""
    root, prepared, base = workspace
    common = ["run.torch_threads=1", "preference.method=kto", f"kto.optim.max_steps={DPO_STEPS}",
              "kto.optim.log_every=1", "kto.optim.learning_rate=0.005"]
    one_log, two_log = InMemoryLogger(), InMemoryLogger()
    one = run_preference(load_config(None, [*common, "kto.optim.batch_size=4"]), prepared, base, None,
                         root / "kto1", one_log)
    two = run_preference(load_config(None, [*common, "kto.optim.batch_size=2", "training.num_processes=2"]),
                         prepared, base, None, root / "kto2", two_log)
    assert one.steps == two.steps == DPO_STEPS
    for (s1, m1), (s2, m2) in zip(one_log.records, two_log.records, strict=True):
        assert s1 == s2 and abs(m1["loss"] - m2["loss"]) < 1e-4, (s1, m1["loss"], m2["loss"])
        assert abs(m1["kl"] - m2["kl"]) < 1e-4, (s1, m1["kl"], m2["kl"])
    print("z0 per step:", [round(m["kl"], 5) for _, m in one_log.records])
    assert max(m["kl"] for _, m in one_log.records) > 1e-3  # z0 away from its clamp: the averaging was exercised
    assert_same_weights(one.model.path, two.model.path, atol=1e-5)


def fake_launch(monkeypatch, script: str) -> None:
    """Replace the launched command with a short Python script (argv[1]: the spec path)."""
    monkeypatch.setattr(distributed, "build_command",
                        lambda stage, cfg, spec_path: [sys.executable, "-c", script, str(spec_path)])


def test_a_failing_launch_raises_with_the_tail_of_its_stderr(workspace, monkeypatch) -> None:
    root, prepared, base = workspace
    fake_launch(monkeypatch, "import sys; print('x' * 10000, file=sys.stderr); "
                             "sys.exit('ValueError: DPO needs the SFT model as its reference')")
    cfg = load_config(None, ["training.num_processes=2"])
    with pytest.raises(RuntimeError, match=r"(?s)preference training with 2 processes failed \(exit 1\).*"
                                           r"--- stderr \(tail\) ---\nx+\nValueError: DPO needs the SFT") as err:
        launch_training("preference", cfg, prepared=prepared, base=base, out_dir=root / "bad", logger=InMemoryLogger())
    assert len(str(err.value)) < 5000  # the tail, not the whole log


def test_a_failing_parent_logger_stops_the_launched_process_group(workspace, monkeypatch) -> None:
    root, prepared, base = workspace
    fake_launch(monkeypatch, "import json, os, sys, time; from pathlib import Path; "
                             "spec = json.loads(Path(sys.argv[1]).read_text()); "
                             "Path(spec['out_dir'], 'pid').write_text(str(os.getpid())); "
                             "Path(spec['metrics_path']).write_text(json.dumps("
                             "{'kind': 'metrics', 'step': 1, 'metrics': {'loss': 1.0}}) + '\\n'); time.sleep(60)")

    class Broken:
        def log_metrics(self, metrics, step=None):
            raise ConnectionError("tracking server gone")

    started = time.monotonic()
    with pytest.raises(ConnectionError):
        launch_training("sft", load_config(None, ["training.num_processes=2"]), prepared=prepared, base=base,
                        out_dir=root / "broken", logger=Broken())
    assert time.monotonic() - started < 30
    pid = int((root / "broken" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_commands_torchrun_on_cpu_accelerate_launch_on_cuda(tmp_path) -> None:
    cfg = load_config(None, ["training.num_processes=4"])
    cpu = build_command("sft", cfg, tmp_path / "spec.json", cuda=False)
    assert cpu[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cpu[cpu.index("--nproc_per_node") + 1] == "4"
    assert cpu[-4:] == ["-m", "alignment.worker", "sft", str(tmp_path / "spec.json")]
    gpu = build_command("sft", cfg, tmp_path / "spec.json", cuda=True)
    assert gpu[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in gpu and gpu[gpu.index("--num_processes") + 1] == "4"
    fsdp = load_config(None, ["training.num_processes=2", "training.accelerate_config=infra/accelerate/fsdp.yaml",
                              "training.mixed_precision=bf16"])
    cmd = build_command("preference", fsdp, tmp_path / "spec.json", cuda=True)
    assert Path(cmd[cmd.index("--config_file") + 1]) == Path("infra/accelerate/fsdp.yaml").resolve()
    assert "--multi_gpu" not in cmd and cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    assert cmd[cmd.index("--num_processes") + 1] == "2"  # overrides the file's 8
    missing = load_config(None, ["training.num_processes=2", "training.accelerate_config=nowhere.yaml"])
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        build_command("sft", missing, tmp_path / "spec.json", cuda=True)


def test_training_config_bounds() -> None:
    assert PipelineConfig().training.num_processes == 1
    for bad in ["training.num_processes=0", "training.num_processes=65", "training.mixed_precision=fp8",
                "training.unknown=1"]:
        with pytest.raises(ConfigError, match="training"):
            load_config(None, [bad])


def test_jsonl_logger_lines_are_read_back_whole_and_forwarded(tmp_path) -> None:
    path = tmp_path / "m.jsonl"
    log = JsonlMetricsLogger(path)
    assert read_new_records(path, 0) == ([], 0)  # not written yet
    log.log_metrics({"loss": 1.5}, step=1)
    log.log_progress(1, 4, {"loss": 1.5})
    with path.open("a") as fh:
        fh.write('{"kind": "metrics", "step": 2, "metr')  # a line being written
    records, offset = read_new_records(path, 0)
    assert records == [{"kind": "metrics", "step": 1, "metrics": {"loss": 1.5}},
                       {"kind": "progress", "step": 1, "total": 4}]
    with path.open("a") as fh:
        fh.write('ics": {"loss": 1.25}}\n')
    more, _ = read_new_records(path, offset)
    assert more == [{"kind": "metrics", "step": 2, "metrics": {"loss": 1.25}}]

    logger, seen, last = InMemoryLogger(), [], {}
    for record in records + more:
        last = forward_record(record, logger, lambda s, t, m: seen.append((s, t, dict(m))), last)
    assert logger.records == [(1, {"loss": 1.5}), (2, {"loss": 1.25})]
    assert seen == [(1, 4, {"loss": 1.5})]


def test_commands_of_a_node_of_several() -> None:
    """Node r of N: torchrun's static rendezvous at the head's endpoint (ranks follow node ranks, so global
    rank 0 is the head's first process), accelerate's multi-machine launch on CUDA with the total count."""
    from launcher.processes import Nodes, distributed_command

    node = Nodes(count=2, rank=1, endpoint="10.0.0.5:29400", timeout_s=60)
    cpu = distributed_command(["-m", "alignment.worker", "sft", "spec.json"], num_processes=4, cuda=False, nodes=node)
    assert "--standalone" not in cpu and "--rdzv_backend" not in cpu
    flags = dict(zip(cpu[3:-4:2], cpu[4:-4:2], strict=True))
    assert flags == {"--nnodes": "2", "--node_rank": "1", "--master_addr": "10.0.0.5", "--master_port": "29400",
                     "--rdzv_conf": "timeout=60", "--nproc_per_node": "4"}
    gpu = distributed_command(["-m", "alignment.worker", "sft", "spec.json"], num_processes=4, cuda=True, nodes=node)
    assert gpu[gpu.index("--num_processes") + 1] == "8"  # accelerate counts every machine's processes
    assert [gpu[gpu.index(f) + 1] for f in ("--num_machines", "--machine_rank", "--main_process_ip",
                                            "--main_process_port")] == ["2", "1", "10.0.0.5", "29400"]
    cfg = load_config(None, ["training.num_nodes=2", "training.pool=nodes", "training.num_processes=3",
                             "training.node_timeout_s=45"])
    cfg.training.node = {"rank": 0, "endpoint": "127.0.0.1:29500"}  # what the training flow sets on the head
    cmd = build_command("sft", cfg, Path("spec.json"), cuda=False)
    assert cmd[cmd.index("--node_rank") + 1] == "0" and cmd[cmd.index("--rdzv_conf") + 1] == "timeout=45"
    assert cmd[cmd.index("--nproc_per_node") + 1] == "3"
