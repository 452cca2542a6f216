"""A causal LM's outputs at the response tokens of prompt + response batches.

Training (`rl.train`, `rl.setup.PolicyCritic`) and the analysis (`lab.analysis.metrics.token_kl`)
score the same sampled tokens with the same inputs, so both import them from here, and the analysis
does not depend on the training loop.

Shapes: `B` sequences, `Lq` prompt tokens (left-padded, as `runtime.generation.generate` returns
them), `T` response tokens (right-padded).
"""

from __future__ import annotations

from typing import Any

import torch


def response_inputs(query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor) -> dict[str, Any]:
    """Model inputs for prompt + response. Position ids follow the attention mask, as in
    `generate` with left padding, so the log-probabilities computed are those of the sampled tokens."""
    input_ids = torch.cat([query, response], dim=1)
    attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}


def response_slice(query: torch.Tensor) -> slice:
    """The positions whose outputs predict the response tokens: the last prompt position up to the
    second-to-last response position (the output at position t predicts token t + 1)."""
    return slice(query.shape[1] - 1, -1)


def forward_response(
    model: Any, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Outputs of a transformers model at the positions that predict each response token: `(B, T, ...)`."""
    logits = model(**response_inputs(query, query_mask, response, response_mask)).logits
    return logits[:, response_slice(query)]
