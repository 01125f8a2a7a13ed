"""The reward model (notebook 03): Bradley–Terry from scratch, its training loop, TRL's twin, a bag-of-words baseline."""

from .model import RewardModel, RewardScorer, bradley_terry_loss, load_reward_model

__all__ = ["RewardModel", "RewardScorer", "bradley_terry_loss", "load_reward_model"]
