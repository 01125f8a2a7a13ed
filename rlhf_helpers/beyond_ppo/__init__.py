"""Beyond PPO (notebook 08): DPO from scratch (`dpo`, `dpo_training`) and with TRL (`trl_dpo`), Preferred-FT,
TRL's GRPO and RLOO trainers (`grpo_rloo`), and TRL trainers evaluated along their runs (`trl_evaluation`), on the
course's task with the course's models and reward."""
