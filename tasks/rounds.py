"""Iterated on-policy rounds (`onpolicy.rounds`; iterative DPO, Xiong et al. 2024, arXiv 2312.11456): round r
samples from round r-1's policy, pairs its answers and trains from that policy (ORPO starts from it too,
whatever `orpo.init` says for round 1). DPO's reference for the round is that policy, or with
`onpolicy.round_reference: original` the model round 1 started from (alignment/stages/training.py
reference_model).

The criterion is measured for free: each round's on-policy stage samples the held-out prompts from the model
the round starts from and scores every sample, so round r+1's sampling measures round r's policy. A round
whose policy does not raise it by more than `onpolicy.round_min_gain` is dropped and the rounds stop; the
last kept round's policy goes on to the evaluation against the original model and every gate. Round 1 is
always kept (the gates judge it, as without rounds). Every stage of a round is an ordinary cached stage (the
keys hold the starting model's fingerprint); each round is also an MLflow child run `round-<r>`.

Each round's policy is also measured on what the training did not write, and held to the gates that need no
comparison run (evaluation/gates.py round_gates) before another round builds on it: the general benchmarks
against the original model's (the same cached lm-eval results the final evaluation uses, so the kept policy's
and the original model's cost nothing extra) and its held-out samples' median length against the original
model's samples; a policy failing one is dropped and the rounds stop, like one that does not raise the
criterion. The KL from its reference (held-out evaluation's `saved_kl`) is recorded. `rounds.png` plots
compliance, capability and distance per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger

from alignment.config import PipelineConfig
from alignment.records import ModelRef, PreparedData, TrainOutput
from evaluation.gates import round_gates
from evaluation.plots import plot_rounds
from tasks.evaluation import headline_benchmarks
from tasks.stages import onpolicy, train_preference
from tasks.timing import step
from tasks.tracking import RunContext, stage_run


@dataclass
class Round:
    number: int
    pairs: PreparedData  # sampled from the model the round started from
    policy: TrainOutput
    start_score: float | None  # the criterion of the model the round started from
    end_score: float | None = None  # of its policy (measured by the next round's sampling)
    kept: bool = True
    benchmarks: dict[str, float] | None = None  # its policy's headline value per benchmark task
    length_ratio: float | None = None  # its policy's held-out samples' median words over the original model's
    failed_gates: list[str] = field(default_factory=list)  # round_gates its policy failed

    def row(self) -> dict:
        reference = self.policy.reference
        return {"round": self.number, "start_score": self.start_score, "end_score": self.end_score,
                "kept": self.kept, "pairs": self.pairs.counts.get("train", 0),
                "final_loss": self.policy.final_metrics.get("loss"), "model": self.policy.model.path,
                "reference": reference.path if reference else None,
                "kl": self.policy.final_metrics.get("saved_kl"), "benchmarks": self.benchmarks,
                "length_ratio": self.length_ratio, "failed_gates": self.failed_gates}


def heldout_split(pairs: PreparedData) -> dict:
    return pairs.report.get("onpolicy", {}).get("splits", {}).get("heldout") or {}


def heldout_score(pairs: PreparedData) -> float | None:
    """Of the held-out samples the on-policy stage scored: the share that pass their instruction less the share
    that are degenerate (empty, the prompt echoed, a loop, too short); None without instruction checks."""
    split = heldout_split(pairs)
    seen, samples = sum(split.get("seen", {}).values()), split.get("samples", 0)
    if not seen or not samples:
        return None
    return sum(split.get("passed", {}).values()) / seen - split.get("degenerate", 0) / samples


def length_ratio(pairs: PreparedData, original: PreparedData) -> float | None:
    """Median words of the held-out samples in `pairs` (prompts without a word limit) over those in `original`
    (the samples of the model round 1 started from); None when either was not measured."""
    words, start = heldout_split(pairs).get("median_words"), heldout_split(original).get("median_words")
    if words is None or not start:
        return None
    return words / start


def later_round_config(config: PipelineConfig) -> PipelineConfig:
    """Rounds after the first start from the previous round's policy, for every method."""
    return config.model_copy(update={"orpo": config.orpo.model_copy(update={"init": "sft"})})


class RoundChecks:
    """A round's policy held to `round_gates` against the original model: its general benchmarks (the lm-eval
    results the final evaluation reuses, cached per model) and its held-out samples' length."""

    def __init__(self, config: PipelineConfig, original: ModelRef, ctx: RunContext) -> None:
        self.config, self.ctx = config, ctx
        self.enabled = config.eval.benchmarks.enabled
        self.start = self.benchmark(original)

    def benchmark(self, model: ModelRef) -> dict[str, float] | None:
        if not self.enabled:
            return None
        with step("benchmarks"):
            return headline_benchmarks(self.config, [model], self.ctx)[0]

    def __call__(self, r: Round) -> None:
        r.benchmarks = self.benchmark(r.policy.model)
        if not self.config.onpolicy.round_gates:
            return
        promo = self.config.promotion
        paired = {t: (v, self.start[t]) for t, v in (r.benchmarks or {}).items() if self.start and t in self.start}
        gates = round_gates(benchmarks=paired, max_benchmark_regression=promo.max_benchmark_regression,
                            length_ratio=r.length_ratio, min_length_ratio=promo.min_length_ratio)
        r.failed_gates = [g.name for g in gates if not g.passed]


def iterate_rounds(config: PipelineConfig, source: PreparedData, base: ModelRef, first: Round,
                   original: ModelRef, ctx: RunContext) -> tuple[Round, list[Round]]:
    """Rounds 2..onpolicy.rounds after `first`; returns the last kept round and every round. `original`: the
    final evaluation's reference (the SFT model, else the base), benchmarked as round 0.

    Before round r builds on round r-1's policy, that policy is sampled (the criterion, the length of its
    answers) and held to `round_gates`; a policy that does not raise the criterion or fails a gate is dropped
    (round 1 always stands) and the rounds stop. The last round's policy, which no round samples, is held to
    the benchmark gates only, and dropped if it fails one."""
    log = get_run_logger()
    rounds, cfg = [first], later_round_config(config)
    check = RoundChecks(config, original, ctx)
    for number in range(2, config.onpolicy.rounds + 1):
        previous = rounds[-1]
        with step("onpolicy"):
            pairs = onpolicy(cfg, source, base, previous.policy, ctx)
        previous.end_score = heldout_score(pairs)
        previous.length_ratio = length_ratio(pairs, first.pairs)
        check(previous)
        if previous.failed_gates or stops_here(previous, config.onpolicy.round_min_gain):
            previous.kept = previous.number == 1
            log.info("rounds: round %d's policy scored %s against %s at its start%s: stopping after round %d",
                     previous.number, previous.end_score, previous.start_score,
                     f", failed {', '.join(previous.failed_gates)}" if previous.failed_gates else "", number - 1)
            break
        with step(config.preference.method):
            policy = train_preference(cfg, pairs, base, previous.policy, ctx)
        rounds.append(Round(number, pairs, policy, start_score=previous.end_score))
        log.info("rounds: round %d trained from round %d's policy on %d pairs", number, number - 1,
                 pairs.counts.get("train", 0))
    else:
        last = rounds[-1]
        check(last)
        if last.failed_gates and last.number > 1:
            last.kept = False
            log.info("rounds: round %d's policy failed %s: round %d's goes on", last.number,
                     ", ".join(last.failed_gates), last.number - 1)
    record_rounds(rounds, check.start, ctx)
    return [r for r in rounds if r.kept][-1], rounds


def stops_here(last: Round, min_gain: float) -> bool:
    """True when `last`'s policy did not raise the criterion by more than `min_gain` (both measured)."""
    if last.start_score is None or last.end_score is None:
        return False
    return last.end_score <= last.start_score + min_gain


def record_rounds(rounds: list[Round], start: dict[str, float] | None, ctx: RunContext) -> None:
    """One MLflow child run per round (its criterion at start and end, pairs, final loss, KL from its reference,
    benchmarks, kept), the plot on the last; `start`: the original model's benchmarks (round 0)."""
    for r in rounds:
        params = {"round": r.number, "round.pairs_fingerprint": r.pairs.fingerprint,
                  "round.reference": r.policy.reference.fingerprint if r.policy.reference else "none"}
        tags = {"alignflow.round": str(r.number), "alignflow.round_kept": str(r.kept).lower(),
                "alignflow.round_failed_gates": ",".join(r.failed_gates) or "none"}
        with stage_run(ctx, f"round-{r.number}", params, tags=tags) as run:
            metrics = {"round/pairs": float(r.pairs.counts.get("train", 0)),
                       "round/final_loss": r.policy.final_metrics.get("loss", float("nan"))}
            metrics.update({f"round/{name}": value for name, value in
                            (("start_score", r.start_score), ("end_score", r.end_score),
                             ("kl", r.policy.final_metrics.get("saved_kl")), ("length_ratio", r.length_ratio))
                            if value is not None})
            metrics.update({f"round/benchmark/{task}": value for task, value in (r.benchmarks or {}).items()})
            run.log_metrics(metrics)
            if r is rounds[-1]:
                plot = plot_rounds([x.row() for x in rounds],
                                   Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id / "rounds.png",
                                   start_benchmarks=start)
                if plot is not None:
                    run.log_artifact(plot, "plots")

