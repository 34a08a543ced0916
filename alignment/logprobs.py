"""Batching and sequence log-probabilities, kept apart from the loss maths.

A preference batch is one concatenated forward pass: rows [chosen_1..chosen_B, rejected_1..rejected_B],
each `prompt + response`, right-padded, with labels masked (IGNORE_INDEX) on prompt and padding.
`sequence_logps` returns per-row sums and token counts of log p(response token | prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignment.tokenization import IGNORE_INDEX


@dataclass(frozen=True)
class SequenceLogps:
    sum: torch.Tensor  # (N,) summed log-probs of the labelled tokens
    count: torch.Tensor  # (N,) number of labelled tokens

    @property
    def mean(self) -> torch.Tensor:  # (N,)
        return self.sum / self.count.clamp(min=1)

    def split(self) -> tuple[SequenceLogps, SequenceLogps]:
        """First and second half of the rows (chosen, rejected of a concatenated pair batch)."""
        half = self.sum.shape[0] // 2
        return (SequenceLogps(self.sum[:half], self.count[:half]),
                SequenceLogps(self.sum[half:], self.count[half:]))


def pad_batch(input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row. Returns input_ids, attention_mask, labels: (N, T) each."""
    width = max(len(ids) for ids in input_ids)
    ids_t = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    lab_t = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    mask_t = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(input_ids, labels, strict=True)):
        ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lab_t[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        mask_t[i, : len(ids)] = 1
    return {"input_ids": ids_t, "attention_mask": mask_t, "labels": lab_t}


def collate_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Preference rows (prompt_ids, chosen_ids, rejected_ids[, ref_*]) -> one concatenated batch of 2B rows."""
    seqs, labels = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for row in rows:
            seqs.append(row["prompt_ids"] + row[key])
            labels.append([IGNORE_INDEX] * len(row["prompt_ids"]) + row[key])
    batch = pad_batch(seqs, labels, pad_id)
    if "ref_chosen_logps" in rows[0]:
        batch["ref_chosen_logps"] = torch.tensor([r["ref_chosen_logps"] for r in rows], dtype=torch.float32)
        batch["ref_rejected_logps"] = torch.tensor([r["ref_rejected_logps"] for r in rows], dtype=torch.float32)
    return batch


def collate_sft(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    return pad_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], pad_id)


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> SequenceLogps:
    """Summed log-probs of the labelled tokens of every row. Next-token alignment: logits at t predict t+1."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (N, T, V)
    labels = batch["labels"][:, 1:]  # (N, T-1)
    logits = logits[:, :-1]  # (N, T-1, V)
    token_logps = -F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none",
    ).view(labels.shape)  # (N, T-1); 0 where ignored
    mask = labels != IGNORE_INDEX
    return SequenceLogps(sum=(token_logps * mask).sum(-1), count=mask.sum(-1))


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens in a batch."""
    return int(batch["attention_mask"].sum())


@torch.no_grad()
def reference_logps(model: torch.nn.Module, rows: list[dict], pad_id: int, batch_size: int,
                    device: torch.device | str = "cpu") -> tuple[list[float], list[float]]:
    """Summed log-probs of chosen and rejected responses under a frozen reference model, for every row.

    Computed once before preference training and stored with the prepared data, so the reference model is
    not resident while the policy trains."""
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(rows), batch_size):
        batch = collate_pairs(rows[start:start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = sequence_logps(model, batch).split()
        chosen += c.sum.tolist()
        rejected += r.sum.tolist()
    return chosen, rejected
