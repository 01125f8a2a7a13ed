"""The reward model (notebook 03): Bradley–Terry from scratch, its training loop, TRL's twin, a bag-of-words baseline."""

from .labelling import LabellingSession, draw_label_pairs, label_noise_curve, reward_model_step, scripted_labeller
from .model import RewardModel, RewardScorer, bradley_terry_loss, load_reward_model

__all__ = ["RewardModel", "RewardScorer", "bradley_terry_loss", "load_reward_model",
           "LabellingSession", "draw_label_pairs", "label_noise_curve", "reward_model_step", "scripted_labeller"]
