"""PPO from scratch (notebooks 05–06): KL penalty, advantages, losses, the value head, rollouts, the trainer."""

from .rollout import Rollout, collect_rollout, sample_prompt_batch
from .trainer import PPOTrainer, ppo_update

__all__ = ["Rollout", "collect_rollout", "sample_prompt_batch", "PPOTrainer", "ppo_update"]
