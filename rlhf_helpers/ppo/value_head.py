"""The PPO policy: a GPT-2 language model with a scalar value head on the same backbone.

PPO needs two outputs from one network for every response token ``t``:

* the **policy** ``pi_theta(y_t | x, y_<t)`` — the language model's next-token distribution;
* the **value** ``V(x, y_<t)`` — a prediction of the return still to come, the baseline of GAE.

As in the historical TRL ``AutoModelForCausalLMWithValueHead`` and Ziegler et al. (2019), the value is a
linear layer on the transformer's last hidden state, sharing the backbone with the policy. Two details
from Huang et al. (2023, "The N Implementation Details of RLHF with PPO", section "Policy training implementation details"):

* the value head starts at **zero** (weights and bias), so the first values are 0 rather than noise
  and the first advantages are just the rewards-to-go;
* **no dropout**, anywhere: every pass (rollout, reference, update) must see the same network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GPT2LMHeadModel

from ..policy.logprobs import logprobs_from_logits, packed_response_forward, response_forward, scale_logits
from ..policy.packed import Packing, packable, packed_hidden_states, packed_logits, unpack_responses


@dataclass
class PolicyOutput:
    logits: torch.Tensor
    """``[B, L, V]`` next-token scores at every position."""
    values: torch.Tensor
    """``[B, L]`` value predicted at every position (float32)."""


class PolicyWithValueHead(nn.Module):
    """``GPT2LMHeadModel`` + ``Linear(n_embd, 1)`` value head, initialised to zero."""

    accepts_packing = True  # forward(packing=...): `rlhf_helpers.policy.logprobs.packed_response_forward`

    def __init__(self, lm: GPT2LMHeadModel):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep: int = 0,
                packing: Packing | None = None) -> PolicyOutput:
        """Logits and values at every position, or at the last `logits_to_keep` positions only (0: all).

        `packing` (`rlhf_helpers.policy.packed`): the real tokens only; logits ``[M, V]`` and values ``[M]`` at
        the packing's M outputs (the masks and positions come from the packing: the other arguments but
        `input_ids` are ignored)."""
        if packing is not None:
            hidden = packed_hidden_states(self.lm, input_ids, packing)
            values = self.value_head(hidden[: packing.outputs].to(self.value_head.weight.dtype)).squeeze(-1).float()
            return PolicyOutput(logits=packed_logits(self.lm, input_ids, packing, hidden), values=values)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      output_hidden_states=True, logits_to_keep=logits_to_keep)
        # hidden_states[-1] is after GPT-2's final LayerNorm: the same features the LM head reads.
        hidden = out.hidden_states[-1]
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return PolicyOutput(logits=out.logits, values=values)

    def save_pretrained(self, directory: str | Path) -> None:
        """The LM as a normal `transformers` checkpoint (loadable by `load_policy`), plus the value head."""
        directory = Path(directory)
        self.lm.save_pretrained(str(directory), safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(directory / "value_head.safetensors"))
        (directory / "value_head.json").write_text(json.dumps({"n_embd": self.lm.config.n_embd}))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PolicyWithValueHead":
        """Load an LM directory; restore the value head if one was saved, else start it at zero."""
        directory = Path(directory)
        policy = cls(GPT2LMHeadModel.from_pretrained(str(directory)))
        head = directory / "value_head.safetensors"
        if head.exists():
            policy.value_head.load_state_dict(load_file(str(head)))
        return policy


def response_logprobs_and_values(policy, query_ids, query_mask, response_ids, response_mask, temperature: float = 1.0,
                                 fast: bool = False):
    """One forward pass over ``[query | response]``; the response tokens' log-probs, logits and values.

    Args:
        query_ids / query_mask: ``[B, P]``, left-padded prompts.
        response_ids / response_mask: ``[B, R]``, right-padded responses.
        temperature: the sampling temperature: log-probs come from ``logits / temperature``
            (Huang et al. 2023: recompute with the temperature used for sampling).
        fast: the real tokens only (`packed_response_forward`; a GPT-2 that is not `packable`: the LM head at
            the response positions only), and the second output is the log-softmax at the M real response
            tokens, ``[M, V]`` row-major, instead of the logits (what the entropy needs, so it is not computed
            twice).
    Returns:
        ``logprobs [B, R]`` (0 on padding), ``logits [B, R, V]`` (divided by temperature; with `fast`: the
        log-softmax ``[M, V]``), ``values [B, R]`` — the value of the state *before* each response token (0 on
        padding).
    """
    if fast and packable(policy):
        out, _ = packed_response_forward(policy, query_ids, query_mask, response_ids, response_mask, temperature)
        log_softmax = torch.log_softmax(scale_logits(out.logits, temperature), dim=-1)  # [M, V]
        tokens = response_ids[response_mask.bool()].long()
        logprobs = log_softmax.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return unpack_responses(logprobs, response_mask), log_softmax, unpack_responses(out.values, response_mask)
    out, window = response_forward(policy, query_ids, query_mask, response_ids, response_mask, temperature,
                                   response_only=fast)
    mask = response_mask.float()
    logits = scale_logits(out.logits[:, window, :], temperature)
    values = out.values[:, window] * mask
    if fast:
        log_softmax = torch.log_softmax(logits, dim=-1)
        logprobs = log_softmax.gather(-1, response_ids.long().unsqueeze(-1)).squeeze(-1) * mask
        return logprobs, log_softmax[response_mask.bool()], values
    logprobs = logprobs_from_logits(logits, response_ids) * mask
    return logprobs, logits, values
