"""Every exercise of notebooks 04 and 05 has CASES (tests/exercise_cases/cases_04_05.py), the hand-written
references those CASES stand on equal the package, and exercise 4.2's reference equals TRL 1.16's own GRPO loss.

The reference / stub / wrong-implementation tests of those CASES, and the notebooks' solution cells run with only
torch/F/math/np/pd, are in tests/test_exercises.py.
"""

import warnings

import pytest
import torch
from exercise_cases.cases_04_05 import CASES, gae_loop

from rlhf_helpers.exercises import EXERCISES
from rlhf_helpers.exercises.trl import _grpo_loss_cases, grpo_loss
from rlhf_helpers.ppo.advantages import compute_gae


def test_every_exercise_of_04_and_05_has_cases():
    registered = {name for name, e in EXERCISES.items() if e.notebook in ("04", "05")}
    assert registered == {name for name, _, _ in CASES}
    assert len(registered) >= 10


def test_the_hand_written_references_equal_the_package():
    """`_plain_gae` (the wrong implementations' base) is GAE itself with its switches off."""
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(7)[None] < torch.tensor([7, 3, 5])[:, None]).float()
    rewards, values = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.7)]:
        assert torch.allclose(gae_loop(rewards, values, mask, gamma, lam)[0],
                              compute_gae(rewards, values, mask, gamma, lam)[0], atol=1e-6)


# -- exercise 4.2's reference is TRL 1.16's own GRPO loss ------------------------------------------


@pytest.fixture(scope="module")
def grpo_trainer(tmp_path_factory):
    """A real GRPOTrainer (beta > 0) on a random 1-layer GPT-2, on CPU: only its `_compute_loss` is called."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_helpers.data.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["a good film with great acting", "a bad film with an awful plot"] * 10,
                                    vocab_size=300)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("grpo_model")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = trl.GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), report_to="none", use_cpu=True,
                              bf16=False, seed=0, disable_dropout=True, num_generations=2,
                              per_device_train_batch_size=4, max_completion_length=6, beta=0.1)
        trainer = trl.GRPOTrainer(model=str(path), reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)],
                                  args=args, processing_class=tokenizer,
                                  train_dataset=Dataset.from_dict({"prompt": ["a good", "a bad"]}))
    assert not trainer.model.training and trainer.args.use_bias_correction_kl  # eval mode; TRL's default KL
    return trainer


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_the_grpo_loss_reference_is_trls_compute_loss(grpo_trainer):
    """On the check's own cases, `rlhf_helpers.exercises.trl.grpo_loss` gives TRL 1.16's `_compute_loss` value and
    gradient (TRL's forward pass replaced by the case's log-probs; everything after it is TRL's code)."""
    trainer = grpo_trainer
    for case, logp, old, ref, adv, mask, beta, eps, loss_type in _grpo_loss_cases():
        leaf = logp.clone().requires_grad_(True)

        def forward(model, *args, **kwargs):
            return (leaf if torch.is_grad_enabled() else leaf.detach()), torch.zeros_like(logp), None

        trainer._get_per_token_logps_and_entropies = forward
        trainer.beta, trainer.loss_type, trainer.epsilon_low, trainer.epsilon_high = beta, loss_type, eps, eps
        B, T = logp.shape
        inputs = {"prompt_ids": torch.ones(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
                  "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask.long(),
                  "ref_per_token_logps": ref, "old_per_token_logps": old, "advantages": adv,
                  "num_items_in_batch": mask.sum()}
        trl_loss = trainer._compute_loss(trainer.model, inputs)
        trl_loss.backward()
        ours_leaf = logp.clone().requires_grad_(True)
        ours = grpo_loss(ours_leaf, old, ref, adv, mask, beta, eps, loss_type)
        ours.backward()
        assert trl_loss.item() == pytest.approx(ours.item(), rel=1e-5, abs=1e-7), case
        assert torch.allclose(leaf.grad, ours_leaf.grad, atol=1e-6), case
