"""Process-wide determinism and thread settings; every stage calls `setup_runtime` first."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
import transformers


def setup_runtime(seed: int, threads: int) -> None:
    """Pin torch's intra-op threads (on 2-core machines more threads can be several times slower) and seed
    every RNG the stages use."""
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    quiet_libraries()


def quiet_libraries() -> None:
    """Progress bars and chatter of the ML libraries would drown the pipeline's own log."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
