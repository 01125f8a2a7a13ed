"""Every model a stage loads goes to the accelerator's device (on a GPU machine: the GPU), not to "cpu".

Checked on the CPU by making the process's device a stand-in and recording where each loader is asked to put
its model.
"""

import torch

from rlhf_helpers import pipeline
from rlhf_helpers.config import get_config


class _State:
    device = torch.device("meta")  # no real accelerator here: any device other than "cpu" tells the two apart


def test_evaluate_loads_every_model_on_the_accelerators_device(artifacts, monkeypatch):
    placed = []

    class Scorer:
        score = None

    def load_policy(source, device="cpu"):
        placed.append(("policy", str(source), torch.device(device)))
        return object(), None

    def load_reward_model(source, device="cpu", **kwargs):
        placed.append(("reward", str(source), torch.device(device)))
        return Scorer()

    monkeypatch.setattr(pipeline, "process_state", lambda: _State())
    monkeypatch.setattr(pipeline, "load_policy", load_policy)
    monkeypatch.setattr(pipeline, "load_reward_model", load_reward_model)
    monkeypatch.setattr(pipeline, "default_judges", lambda config: {})
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [torch.tensor([1, 2])] * 3})
    monkeypatch.setattr(pipeline, "evaluate_policy", lambda *a, **k: ({"reward": 0.0}, []))
    ppo = artifacts / "tiny" / "ppo_policy"
    ppo.mkdir(parents=True)
    (ppo / "config.json").write_text("{}")
    pipeline.stage_evaluate(get_config("tiny"), n_prompts=3)
    kinds = [kind for kind, _, _ in placed]
    assert kinds.count("policy") == 3 and kinds.count("reward") == 1  # reference, SFT, PPO; the reward model
    assert all(device == torch.device("meta") for _, _, device in placed), placed


def test_ppo_loads_the_reward_model_beside_the_policy(artifacts, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def load_reward_model(source, device="cpu", **kwargs):
        seen["device"] = torch.device(device)
        raise Stop

    monkeypatch.setattr(pipeline, "process_state", lambda: _State())
    monkeypatch.setattr(pipeline, "load_policy", lambda source, **kwargs: (object(), None))
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [[1, 2]] * 64})
    monkeypatch.setattr(pipeline, "load_reward_model", load_reward_model)
    try:
        pipeline.stage_ppo(get_config("tiny"))
    except Stop:
        pass
    assert seen["device"] == torch.device("meta")
