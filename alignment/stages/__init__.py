"""The pipeline's ML stages as plain functions: prepare data, build the base model, SFT, DPO/ORPO.

Each takes the config and the small records of earlier stages (paths and fingerprints, never large
objects) and returns its own record, so a stage can run in another process or on another machine.
Nothing here knows about Prefect or MLflow; metrics go through the `MetricsLogger` protocol.

Modules, by concern: `keys` (cache keys and the code version), `data` (preparing data, instruction prompts,
on-policy pairs), `base` (the base model), `training` (SFT and preference training), `runtime` (a stage's device, runtime plan and allocator
scope), `reference` (tokenized
rows and the reference's cached log-probs). Callers import from `alignment.stages` itself, its one public
surface.
"""

from __future__ import annotations

from alignment.stages.base import build_base_model, corpus_texts
from alignment.stages.data import (
    HELDOUT_PROMPTS,
    as_conversational,
    onpolicy_pairs,
    prepare_data,
    write_instruction_prompts,
    write_quickstart_files,
)
from alignment.stages.keys import CODE_VERSION, stage_key
from alignment.stages.reference import reference_annotated_pairs, scored_ids_digest, tokenized_rows
from alignment.stages.runtime import model_device, stage_device, stage_plan, training_scope
from alignment.stages.training import (
    fit_and_save,
    heldout_evaluator,
    reference_model,
    run_preference,
    run_sft,
    starting_model,
    training_rows,
)

__all__ = ["CODE_VERSION", "HELDOUT_PROMPTS", "as_conversational", "build_base_model", "corpus_texts",
           "fit_and_save", "heldout_evaluator", "model_device", "onpolicy_pairs", "prepare_data",
           "reference_annotated_pairs", "reference_model", "run_preference", "run_sft", "scored_ids_digest", "stage_device",
           "stage_key", "stage_plan", "starting_model", "tokenized_rows", "training_rows", "training_scope",
           "write_instruction_prompts", "write_quickstart_files"]
