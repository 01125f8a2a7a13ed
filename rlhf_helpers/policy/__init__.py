"""The policy (notebook 02): the GPT-2 model, batched generation, response log-probs, supervised fine-tuning."""

from ..core.assets import shipped_policy_dir, shipped_tokenizer_dir
from .generation import generate, sample_responses
from .logprobs import response_logprobs
from .model import check_tokenizer_matches, count_parameters, load_policy, new_policy_model

__all__ = ["shipped_policy_dir", "shipped_tokenizer_dir", "generate", "sample_responses", "response_logprobs",
           "check_tokenizer_matches", "count_parameters", "load_policy", "new_policy_model"]
