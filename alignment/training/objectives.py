"""Training objectives: glue from a batch to a loss, via `sequence_logps` and the pure loss functions.

An objective is `(model, batch) -> StepOutput`; the trainer does not know which one it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from alignment.training.logprobs import collate_sft, collate_shared_pairs, sequence_logps
from alignment.training.losses import dpo_loss, kto_kl_reference, kto_loss, orpo_loss, sft_nll_loss


@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor  # ()
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # () detached scalars


Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor]], StepOutput]


def sft_objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
    logps = sequence_logps(model, batch)
    return StepOutput(sft_nll_loss(logps.sum, logps.count))


def make_dpo_objective(*, beta: float, loss_type: str, label_smoothing: float, rpo_alpha: float = 0.0) -> Objective:
    """DPO against reference log-probs precomputed into the batch (`ref_chosen_logps`, `ref_rejected_logps`).

    rpo_alpha > 0 adds alpha * NLL(chosen) (RPO, Pang et al., arXiv 2404.19733, Eq. 1; TRL's `rpo_alpha`),
    which keeps the chosen answers' likelihood from falling while the margin grows. The NLL is TRL's: the mean
    over every chosen-response token of the batch (-sum log p / sum T_w, `sft_nll_loss`), not the paper's
    per-pair -log p(y_w|x) / |y_w| averaged over pairs; the two agree when the chosen responses are of one
    length."""

    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        chosen, rejected = sequence_logps(model, batch).split()
        ref_c, ref_r = batch["ref_chosen_logps"], batch["ref_rejected_logps"]  # (B,) summed
        if loss_type == "ipo":  # IPO works on length-averaged log-probs (as TRL)
            pol_c, pol_r = chosen.mean, rejected.mean
            ref_c, ref_r = ref_c / chosen.count.clamp(min=1), ref_r / rejected.count.clamp(min=1)
        else:
            pol_c, pol_r = chosen.sum, rejected.sum
        out = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
        if rpo_alpha > 0:
            nll = sft_nll_loss(chosen.sum, chosen.count)
            return StepOutput(out.loss + rpo_alpha * nll, {**out.metrics, "nll_loss": nll.detach()})
        return StepOutput(out.loss, out.metrics)

    return objective


def make_orpo_objective(*, lam: float, nll_tokens: str = "response") -> Objective:
    """ORPO (Hong et al., arXiv 2403.07691, Eq. 6): NLL of the chosen response + lam * odds-ratio term.

    nll_tokens "response": the NLL over the chosen response given the prompt (Eq. 2's conditional SFT loss);
    "prompt_and_response": over the prompt's tokens too, as TRL's ORPOTrainer computes it (the batch must be
    collated with score_prompt=True). The odds-ratio term uses the responses' mean log-probs either way."""

    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logps = sequence_logps(model, batch)
        chosen, rejected = logps.split()
        if nll_tokens == "prompt_and_response":
            if logps.prompt is None:
                raise ValueError("ORPO nll_tokens='prompt_and_response' needs batches collated with score_prompt")
            nll = sft_nll_loss(chosen.sum + logps.prompt.sum, chosen.count + logps.prompt.count)
        else:
            nll = sft_nll_loss(chosen.sum, chosen.count)
        out = orpo_loss(chosen.mean, rejected.mean, nll, lam=lam)
        return StepOutput(out.loss, out.metrics)

    return objective


def make_kto_objective(*, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                       kl_mean_across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Objective:
    """KTO (Ethayarajh et al., arXiv 2402.01306, Eq. 8) on a `collate_kto` batch: one forward pass gives the
    summed log-probs of each row's own completion and of its mismatched one; z0 comes from the mismatched pairs
    (`kto_kl_reference`, no gradient, as TRL), the loss from the matched ones against the precomputed reference
    log-probs `ref_logps` and `ref_kl_logps` (B,). `kl_mean_across_processes`: see `kto_kl_reference`."""

    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        matched, mismatched = sequence_logps(model, batch).split()  # (B,) each: log pi(y_i|x_i), log pi(y'_i|x_i)
        z0 = kto_kl_reference(mismatched.sum, batch["ref_kl_logps"], mean_across_processes=kl_mean_across_processes)
        out = kto_loss(matched.sum, batch["ref_logps"], batch["desirable"], z0, beta=beta,
                       desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
        return StepOutput(out.loss, out.metrics)

    return objective


def kl_completions(rows: list[dict]) -> list[list[int]]:
    """The mismatched completion of each row: y'_i = y_{i-1 mod B}, TRL's rotation by +1
    ((x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}); `add_kl_completion_ids` in trl/trainer/kto_trainer.py), so
    the KL term sees the batch's own completions, each with another prompt."""
    if len(rows) < 2:
        raise ValueError("KTO's KL estimate needs at least 2 examples per batch (with 1, the mismatched pair is "
                         "the example itself and z0 equals its implied reward)")
    completions = [row["completion_ids"] for row in rows]
    return completions[-1:] + completions[:-1]


def collate_kto(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Unpaired rows (prompt_ids, completion_ids, label: bool desirable[, ref_logps, ref_kl_logps]) -> a
    prefix-shared batch (`collate_shared_pairs`): row i is prompt_i + completion_i + the mismatched completion
    (`kl_completions`), so `sequence_logps(...).split()` gives the matched (B,) and mismatched (B,) log-probs
    and the prompt is encoded once for both. Adds `desirable` (B,) bool and, when the rows carry them, the
    reference log-probs `ref_logps` and `ref_kl_logps` (B,) of the same pairs (`kto_reference_logps`)."""
    pairs = [{"prompt_ids": row["prompt_ids"], "chosen_ids": row["completion_ids"], "rejected_ids": kl}
             for row, kl in zip(rows, kl_completions(rows), strict=True)]
    batch = collate_shared_pairs(pairs, pad_id)
    batch["desirable"] = torch.tensor([bool(row["label"]) for row in rows], dtype=torch.bool)
    if "ref_logps" in rows[0]:
        batch["ref_logps"] = torch.tensor([row["ref_logps"] for row in rows], dtype=torch.float32)
        batch["ref_kl_logps"] = torch.tensor([row["ref_kl_logps"] for row in rows], dtype=torch.float32)
    return batch


@torch.no_grad()
def kto_reference_logps(model: torch.nn.Module, rows: list[dict], pad_id: int,
                        batch_size: int, device: torch.device | str = "cpu") -> tuple[list[float], list[float]]:
    """Summed reference log-probs of each row's completion and of its mismatched pair, for rows collated in
    consecutive batches of `batch_size` (the mismatched completion depends on the batch: training must batch
    the rows the same way, as TRL's `train_sampling_strategy="sequential"` requires)."""
    model.eval()
    matched, mismatched = [], []
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate_kto(rows[start:start + batch_size], pad_id).items()}
        own, kl = sequence_logps(model, batch).split()
        matched += own.sum.tolist()
        mismatched += kl.sum.tolist()
    return matched, mismatched


def unpair(pairs: list[dict], unpaired: Sequence[dict] = ()) -> list[dict]:
    """KTO's examples: tokenized preference pairs unpaired (as TRL's `unpair_preference_dataset`: each pair's
    chosen answer a desirable example and its rejected answer an undesirable one, both with the pair's prompt;
    d_0, u_0, d_1, u_1, ...), followed by the unpaired examples (`prompt_ids`, `completion_ids`, `label`; e.g.
    arena votes that judged both answers bad).

    Each example also carries the mismatched completion of its KL term, fixed here rather than by the batch
    (TRL rotates within each batch, `kl_completions`, which ties the reference pass to one batching and forbids
    shuffling): the completion of the next example (wrapping) whose prompt differs from its own, so another
    prompt's answer whenever there is one. z0 is still the batch mean over its examples' mismatched pairs
    (`kto_kl_reference`). Rows keep the pair layout — `chosen_ids` the example's own completion, `rejected_ids`
    the mismatched one, `label` True for desirable — so the reference pass, packing and collation of pairs
    serve KTO unchanged (`_kto_plan`)."""
    examples = [{"prompt_ids": pair["prompt_ids"], "chosen_ids": pair[key], "label": desirable}
                for pair in pairs for key, desirable in (("chosen_ids", True), ("rejected_ids", False))]
    examples += [{"prompt_ids": row["prompt_ids"], "chosen_ids": row["completion_ids"], "label": bool(row["label"])}
                 for row in unpaired]
    if len(examples) < 2:
        raise ValueError(f"KTO needs at least 2 examples (each example's KL term uses another's answer), got "
                         f"{len(examples)}")
    n = len(examples)
    for i, example in enumerate(examples):
        following = (examples[(i + k) % n] for k in range(1, n))
        other = next((e for e in following if e["prompt_ids"] != example["prompt_ids"]), examples[(i + 1) % n])
        example["rejected_ids"] = other["chosen_ids"]
    return examples


def collate_unpaired(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """`unpair`'s rows -> a prefix-shared batch of (own, mismatched) completions, with `desirable` (B,) and the
    reference log-probs the pair layout carries renamed for `make_kto_objective` (`ref_logps`, `ref_kl_logps`)."""
    batch = collate_shared_pairs(rows, pad_id)
    batch["desirable"] = torch.tensor([bool(row["label"]) for row in rows], dtype=torch.bool)
    if "ref_chosen_logps" in batch:
        batch["ref_logps"] = batch.pop("ref_chosen_logps")
        batch["ref_kl_logps"] = batch.pop("ref_rejected_logps")
    return batch


Collate = Callable[[list[dict]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class MethodSettings:
    """The knobs of every method's objective (each method reads its own; the others' defaults are unused)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    lam: float = 0.5
    orpo_nll_tokens: str = "response"
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    processes: int = 1  # the training's processes (all nodes): KTO averages z0 over them


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The mean of every process's (B,) detached values (all-reduce of their sum and count, so processes with
    batches of other sizes weigh by their examples, as TRL's gather-then-mean): every process calls it at the
    same micro-step, as the trainer's backward passes already require."""
    total = torch.stack([values.detach().sum(), values.new_tensor(float(values.numel()))])
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total[0] / total[1]


@dataclass(frozen=True)
class Method:
    """A training method: its objective and batch collation, whether its rows carry the starting model's
    log-probs (a reference: DPO's and KTO's are computed once before training, alignment/stages/reference.py),
    and how its rows are made from the tokenized pairs (None: the pairs themselves)."""

    name: str
    uses_reference: bool
    plan: Callable[[int, MethodSettings], tuple[Objective, Collate]]
    rows: Callable[[list[dict], Sequence[dict]], list[dict]] | None = None  # (pairs, unpaired examples) -> rows


def _sft_plan(pad_id: int, _: MethodSettings) -> tuple[Objective, Collate]:
    return sft_objective, lambda rows: collate_sft(rows, pad_id)


def _dpo_plan(pad_id: int, s: MethodSettings) -> tuple[Objective, Collate]:
    objective = make_dpo_objective(beta=s.beta, loss_type=s.loss_type, label_smoothing=s.label_smoothing,
                                   rpo_alpha=s.rpo_alpha)
    return objective, lambda rows: collate_shared_pairs(rows, pad_id)  # the prompt encoded once per pair


def _orpo_plan(pad_id: int, s: MethodSettings) -> tuple[Objective, Collate]:
    score_prompt = s.orpo_nll_tokens == "prompt_and_response"
    objective = make_orpo_objective(lam=s.lam, nll_tokens=s.orpo_nll_tokens)
    return objective, lambda rows: collate_shared_pairs(rows, pad_id, score_prompt=score_prompt)


def _kto_plan(pad_id: int, s: MethodSettings) -> tuple[Objective, Collate]:
    objective = make_kto_objective(beta=s.beta, desirable_weight=s.desirable_weight,
                                   undesirable_weight=s.undesirable_weight,
                                   kl_mean_across_processes=mean_over_processes if s.processes > 1 else None)
    return objective, lambda rows: collate_unpaired(rows, pad_id)


# the registry the pipeline's stages and the benchmark (bench/) dispatch on: a new method is one entry here
METHODS: dict[str, Method] = {
    "sft": Method("sft", uses_reference=False, plan=_sft_plan),
    "dpo": Method("dpo", uses_reference=True, plan=_dpo_plan),
    "orpo": Method("orpo", uses_reference=False, plan=_orpo_plan),
    "kto": Method("kto", uses_reference=True, plan=_kto_plan, rows=unpair),
}


def method_spec(method: str) -> Method:
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})") from None


def method_plan(method: str, *, pad_id: int, beta: float = 0.1, loss_type: str = "sigmoid",
                label_smoothing: float = 0.0, rpo_alpha: float = 0.0, lam: float = 0.5,
                orpo_nll_tokens: str = "response", desirable_weight: float = 1.0,
                undesirable_weight: float = 1.0, processes: int = 1) -> tuple[Objective, Collate]:
    """The objective and the batch collation of one training method (a key of `METHODS`): what the
    pipeline's stages and the benchmark (bench/) both train with. `processes`: how many train together."""
    settings = MethodSettings(beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                              rpo_alpha=rpo_alpha, lam=lam, orpo_nll_tokens=orpo_nll_tokens,
                              desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                              processes=processes)
    return method_spec(method).plan(pad_id, settings)
