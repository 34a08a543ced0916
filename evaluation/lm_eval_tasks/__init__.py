"""The project's own lm-eval tasks: YAML configs beside their small jsonl data (generated from
alignment/instruct/quicktask.py by `python -m evaluation.lm_eval_tasks.alignflow_tasks`), shipped with the package.

Pass this folder to `lm_eval.tasks.TaskManager(include_path=TASK_DIR)`; every data path resolves relative to
the YAML files (see `alignflow_tasks.load_docs`), so nothing depends on the current directory.
"""

from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
