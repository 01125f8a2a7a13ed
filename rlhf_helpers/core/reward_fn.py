"""The contract of a reward function: N texts in, N numbers out (PPO's rollout and the evaluation both rely on it).

`reward_scores` turns what a reward function returned into a float32 ``[N]`` tensor, or says what came back
instead (strings, booleans, None, the wrong count) rather than leaving it to a torch error.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def _describe(value) -> str:
    """A short description of what a reward function returned, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        example = f" (e.g. {value[0]!r:.40})" if value else ""
        return f"a {type(value).__name__} of {len(value)} {'/'.join(kinds) or 'items'}{example}"
    return f"a {type(value).__name__} ({value!r:.60})"


def _is_number(value) -> bool:
    """A real number: a Python / numpy int or float, or a one-element int / float tensor (not a bool)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and (value.dtype.is_floating_point or value.dtype in (torch.int8, torch.int16,
                                                                                         torch.int32, torch.int64))
    return False


def reward_scores(raw, n_texts: int, where: str = "") -> torch.Tensor:
    """What a reward function returned, as a float32 CPU tensor ``[n_texts]``.

    A reward function maps N texts to N numbers (a list, a numpy array or a tensor; ``[N]`` or ``[N, 1]``).
    Strings, booleans, None, nested lists or a different count raise TypeError / ValueError saying what came
    back, instead of a torch error ("too many dimensions 'str'") or a silent broadcast.
    """
    rule = "the reward function must return one number per text"
    suffix = f" {where}" if where else ""
    bad_type = False
    if isinstance(raw, (str, bytes, dict, set)) or raw is None:
        bad_type = True
    elif isinstance(raw, torch.Tensor):
        bad_type = raw.dtype == torch.bool or raw.is_complex()
    elif isinstance(raw, np.ndarray):
        bad_type = raw.dtype.kind not in "iuf"
    elif isinstance(raw, (list, tuple)):
        bad_type = not all(_is_number(v) for v in raw)
    if bad_type:
        raise TypeError(f"{rule}; got {_describe(raw)}{suffix}. Return e.g. a list of floats or a float tensor "
                        f"of shape [{n_texts}].")
    try:
        scores = torch.as_tensor(raw if not isinstance(raw, (list, tuple)) else [float(v) for v in raw],
                                 dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{rule}; got {_describe(raw)}{suffix} ({err}).") from err
    if scores.dim() > 2 or (scores.dim() == 2 and scores.shape[1] != 1) or scores.numel() != n_texts:
        raise ValueError(f"{rule}; got {_describe(raw)} for {n_texts} texts{suffix}. Return a list of {n_texts} "
                         f"numbers (or a tensor of shape [{n_texts}]).")
    return scores.reshape(-1)
