"""Beyond PPO: TRL's GRPO and RLOO trainers on the course's task, with the course's models and reward."""
