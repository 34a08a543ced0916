"""TRL's trainers configured to do the same work as alignflow's: same token ids, batch, steps, optimiser.

TRL is a benchmark-only dependency (the `bench` extra); this module imports it at import time and is only
imported inside benchmark trials and the loss-agreement test.

Settings shared by every TRL trainer (`common_args`), chosen to match alignflow's loop exactly:
fp32 (`bf16=False`; TRL defaults to bf16 autocast), no gradient checkpointing (TRL defaults to it on), AdamW
(`optim="adamw_torch"`, betas (0.9, 0.999), eps 1e-8, weight decay 0), constant learning rate, no warm-up,
gradient clipping at 1.0, one micro-batch per step, `max_steps` steps over exactly `steps * batch` rows (one
epoch), no evaluation, one checkpoint at the last step (`save_strategy="steps"`, `save_steps=steps`: model,
optimizer, scheduler and RNG state, the same resumable checkpoint alignflow's loop writes at its last step, so
both sides do the same work), no logging backends (`report_to="none"`), one log line at the end, dataloader
workers 0.

Token ids reach TRL unchanged:
* DPO: rows `{prompt_ids, chosen_ids, rejected_ids}` (TRL's own tokenized layout); `_prepare_dataset` is
  skipped because TRL 1.16's DPOTrainer has no pre-tokenized path (it would look for a text "prompt"/"chosen").
  Its collator (`DataCollatorForPreference`) and loss are TRL's.
* ORPO: `tokenize_row` is replaced by one that lays the same ids out in the columns TRL's own `tokenize_row`
  produces (`prompt_input_ids`, `chosen_input_ids`, `chosen_labels`, ...), without re-tokenizing text and without
  appending another EOS (the ChatML responses already end with ``<|im_end|>\\n``).
* SFT: TRL's documented pre-tokenized path: `input_ids` + `completion_mask` with `completion_only_loss=True`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainingArguments
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from alignment.data.tokenization import IGNORE_INDEX

TRL_TRAINERS = {"sft": ("trl",), "dpo": ("trl", "trl-precompute"), "orpo": ("trl",)}
# transformers 5.23 renamed gradient_checkpointing (TRL's default: True) to activation_checkpointing
CHECKPOINTING_FIELD = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                       else "gradient_checkpointing")


def common_args(output_dir: Path, *, steps: int, batch_size: int, learning_rate: float, seed: int) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": 1, "learning_rate": learning_rate, "lr_scheduler_type": "constant",
        "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "optim": "adamw_torch",
        "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "seed": seed, "data_seed": seed,
        "bf16": False, "fp16": False, CHECKPOINTING_FIELD: False, "logging_strategy": "steps",
        "logging_steps": steps, "save_strategy": "steps", "save_steps": steps, "eval_strategy": "no", "report_to": "none",
        "dataloader_num_workers": 0, "dataloader_pin_memory": False, "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
    }


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer fed token ids as they are; records how long its reference precompute took."""

    precompute_seconds = 0.0

    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: DPOConfig,
                         dataset_name: str) -> Dataset:
        return dataset  # already {prompt_ids, chosen_ids, rejected_ids}, within max_length

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        started = time.perf_counter()
        out = super()._precompute_ref_logps(dataset, name, batch_size)
        self.precompute_seconds += time.perf_counter() - started
        return out


class PretokenizedORPOTrainer(ORPOTrainer):
    """ORPOTrainer fed token ids: `tokenize_row` lays them out as TRL's own does, without re-tokenizing."""

    def tokenize_row(self, feature: dict[str, Any], model: Any = None) -> dict[str, Any]:
        return orpo_columns(feature)


def orpo_columns(pair: dict[str, list[int]]) -> dict[str, list[int]]:
    prompt = pair["prompt_ids"]
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for key in ("chosen", "rejected"):
        ids = prompt + pair[f"{key}_ids"]
        out[f"{key}_input_ids"] = ids
        out[f"{key}_attention_mask"] = [1] * len(ids)
        out[f"{key}_labels"] = [IGNORE_INDEX] * len(prompt) + pair[f"{key}_ids"]
    return out


def sft_dataset(pairs: list[dict[str, list[int]]]) -> Dataset:
    """Prompt + chosen, loss on the chosen tokens (TRL builds labels from completion_mask)."""
    return Dataset.from_list([{"input_ids": p["prompt_ids"] + p["chosen_ids"],
                               "completion_mask": [0] * len(p["prompt_ids"]) + [1] * len(p["chosen_ids"])}
                              for p in pairs])


def pair_dataset(pairs: list[dict[str, list[int]]]) -> Dataset:
    return Dataset.from_list([{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs])


def make_trainer(method: str, variant: str, model: torch.nn.Module, tokenizer: Any, pairs: list[dict],
                 output_dir: Path, *, steps: int, batch_size: int, learning_rate: float, seed: int, max_length: int,
                 beta: float, lam: float, ref_model: torch.nn.Module | None = None) -> Any:
    """A TRL trainer for `method` ("sft", "dpo", "orpo") and `variant` ("trl" or "trl-precompute", DPO only).

    Without `ref_model`, DPO builds its reference from the policy's path (default) or precomputes the
    reference log-probs with the policy itself before training (`precompute_ref_log_probs=True`), as TRL does."""
    common = common_args(output_dir, steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    if method == "sft":
        args = SFTConfig(**common, max_length=max_length, completion_only_loss=True, packing=False,
                         padding_free=False, loss_type="nll", shuffle_dataset=False)
        return SFTTrainer(model=model, args=args, train_dataset=sft_dataset(pairs), processing_class=tokenizer)
    if method == "dpo":
        if variant not in TRL_TRAINERS["dpo"]:
            raise ValueError(f"unknown TRL DPO variant {variant!r}")
        args = DPOConfig(**common, beta=beta, loss_type=["sigmoid"], label_smoothing=0.0, max_length=max_length,
                         precompute_ref_log_probs=variant == "trl-precompute")
        return PretokenizedDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=pair_dataset(pairs),
                                      processing_class=tokenizer)
    if method == "orpo":
        args = ORPOConfig(**common, beta=lam, max_length=max_length)
        return PretokenizedORPOTrainer(model=model, args=args, train_dataset=pair_dataset(pairs),
                                       processing_class=tokenizer)
    raise ValueError(f"unknown method {method!r}")


@torch.no_grad()
def batch_losses(trainer: Any, method: str, batch_size: int, batches: int) -> list[dict[str, float]]:
    """TRL's loss (its `compute_loss` on its own collated batch) on the first `batches` batches of its
    prepared training set, in order; for ORPO also its NLL term (over prompt + response, as TRL computes it)."""
    trainer.model.train()  # TRL reads the mode for metrics; dropout is off (disable_dropout)
    out = []
    data = trainer.train_dataset
    device = trainer.accelerator.device
    for b in range(batches):
        rows = [data[i] for i in range(b * batch_size, (b + 1) * batch_size)]
        inputs = trainer.data_collator(rows)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if method == "orpo":
            loss, metrics = trainer.get_batch_loss_metrics(trainer.model, inputs, train_eval="train")
            out.append({"loss": float(loss), "nll_loss": float(metrics["nll_loss"])})
        else:
            out.append({"loss": float(trainer.compute_loss(trainer.model, inputs))})
    return out
