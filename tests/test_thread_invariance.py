"""`core.thread_invariance`: a run with fewer CPU threads than cores computes the same bits as one with all of them.

The kernels whose rounding follows the thread count are LayerNorm's backward (gain and bias sums per thread) and
the attention softmax's backward; each test shows first that PyTorch's own kernel does differ at 1 and 2 threads
(so the comparison can fail), then that the course's version at 1 thread equals PyTorch's at 2, bit for bit.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from rlhf_helpers.core import thread_invariance
from rlhf_helpers.core.run import without_timings

REFERENCE = 2  # the machine's full count in these tests (CI's machines have 2 cores; more threads than cores work too)


@pytest.fixture
def restore_threads(monkeypatch):
    """Each test starts from PyTorch's own kernels; whatever it installs or sets is undone after it (other tests
    compare runs at PyTorch's own count)."""
    monkeypatch.setattr(thread_invariance, "_reference_threads", thread_invariance._reference_threads)
    monkeypatch.setattr(F, "layer_norm", F.layer_norm)
    thread_invariance.uninstall()
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def at_threads(count, function, *args):
    torch.set_num_threads(count)
    return function(*args)


def layer_norm_grads(x, weight, bias, grad):
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    out = F.layer_norm(x, (x.shape[-1],), weight, bias, 1e-5)
    out.backward(grad)
    return out.detach(), x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_backward_at_one_thread_equals_the_full_count(restore_threads, dtype):
    generator = torch.Generator().manual_seed(0)
    differs_natively = False
    for rows in [1, 2, 3, 7, 64, 383, 384, 385, 1000]:
        x = torch.randn(rows, 256, generator=generator).to(dtype)
        weight, bias = torch.randn(256, generator=generator), torch.randn(256, generator=generator)
        grad = torch.randn(rows, 256, generator=generator).to(dtype)
        full = at_threads(REFERENCE, layer_norm_grads, x, weight, bias, grad)
        one = at_threads(1, layer_norm_grads, x, weight, bias, grad)
        differs_natively |= not all(torch.equal(a, b) for a, b in zip(full, one))
        thread_invariance.install(REFERENCE)
        same = at_threads(1, layer_norm_grads, x, weight, bias, grad)
        thread_invariance.uninstall()
        for name, a, b in zip(["output", "input grad", "gain grad", "bias grad"], full, same):
            assert torch.equal(a, b), f"{rows} rows, {dtype}: {name} differs from {REFERENCE} threads"
    assert differs_natively, "PyTorch's own kernel no longer depends on the thread count: this test proves nothing"


def softmax_grad(scores, grad):
    scores = scores.detach().clone().requires_grad_()
    thread_invariance.softmax_last_dim(scores).backward(grad)
    return scores.grad


def test_attention_softmax_backward_at_one_thread_equals_the_full_count(restore_threads):
    generator = torch.Generator().manual_seed(0)
    differs_natively = False
    for shape in [(2, 24), (16, 4, 24, 24), (64, 4, 19, 19), (3, 4, 33, 33)]:
        scores, grad = torch.randn(*shape, generator=generator) * 3, torch.randn(*shape, generator=generator)
        full, one = at_threads(REFERENCE, softmax_grad, scores, grad), at_threads(1, softmax_grad, scores, grad)
        differs_natively |= not torch.equal(full, one)
        thread_invariance.install(REFERENCE)
        assert torch.equal(full, at_threads(1, softmax_grad, scores, grad)), shape
        assert torch.get_num_threads() == 1  # the threads borrowed for the backward were given back
        thread_invariance.uninstall()
    assert differs_natively, "PyTorch's own kernel no longer depends on the thread count: this test proves nothing"


def test_with_all_threads_pytorchs_own_kernels_run(restore_threads):
    thread_invariance.install(REFERENCE)
    torch.set_num_threads(REFERENCE)
    x = torch.randn(4, 8, requires_grad=True)
    assert type(F.layer_norm(x, (8,)).grad_fn).__name__ == "NativeLayerNormBackward0"
    assert type(thread_invariance.softmax_last_dim(x).grad_fn).__name__ == "SoftmaxBackward0"
    torch.set_num_threads(1)
    assert "LayerNormSummedInBlocks" in type(F.layer_norm(x, (8,)).grad_fn).__name__
    with torch.no_grad():  # nothing to differentiate: PyTorch's own
        assert F.layer_norm(x, (8,)).grad_fn is None


def test_a_governor_that_adapts_installs_it_and_a_pinned_one_does_not(restore_threads, monkeypatch):
    from rlhf_helpers.core import threads

    thread_invariance.uninstall()
    monkeypatch.setenv(threads.ADAPT_ENV_VAR, "0")
    threads.ThreadGovernor()
    assert thread_invariance.reference_threads() == 0 and F.layer_norm is not thread_invariance.layer_norm
    monkeypatch.setenv(threads.ADAPT_ENV_VAR, "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    threads.ThreadGovernor()
    assert thread_invariance.reference_threads() == 2 and F.layer_norm is thread_invariance.layer_norm


# ----------------------------------------------------------------------------------------------
# Whole runs: the course's models and stages (PPO both paths, SFT, reward, DPO, TRL's GRPO and RLOO), 1 thread vs 2
# ----------------------------------------------------------------------------------------------


def parameters(model):
    return torch.cat([p.detach().flatten().float() for p in model.parameters()])


@pytest.fixture(scope="module")
def shipped():
    from rlhf_helpers import build_dataset, get_config
    from rlhf_helpers.policy import load_policy

    config = get_config("tiny")
    lm, tokenizer = load_policy("tiny")
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    return config, lm, tokenizer, prompts


@pytest.fixture
def fresh_accelerate_state():
    """The course's default precision in these runs (bf16 where the CPU has it), whatever earlier tests chose:
    accelerate keeps one precision per process, so its state is reset before and after."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def ppo_run(shipped, fast, out):
    from rlhf_helpers.ppo import PPOTrainer
    from rlhf_helpers.ppo.trainer import reward_autocast_dtype
    from rlhf_helpers.ppo.value_head import PolicyWithValueHead
    from rlhf_helpers.reward import load_reward_model

    config, lm, tokenizer, prompts = shipped
    settings = copy.deepcopy(config.ppo)
    settings.fast_path, settings.max_steps = fast, 3
    scorer = load_reward_model("tiny", autocast_dtype=reward_autocast_dtype(settings))
    trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), copy.deepcopy(lm), tokenizer, scorer.score, prompts,
                         settings, out)
    trainer.train(progress=False)
    return without_timings(trainer.state["history"]), parameters(trainer.policy)


def runs_agree(a, b):
    return a[0] == b[0] and torch.equal(a[1], b[1])


def assert_one_thread_reproduces_two(run, *args, out):
    """`run(*args, directory) -> (history, weights)` differs at 1 thread and 2 natively (so the test can fail), and
    at 1 thread with the remedy equals 2 threads, bit for bit."""
    full = at_threads(REFERENCE, run, *args, out / "full")
    one = at_threads(1, run, *args, out / "one")
    assert not runs_agree(full, one), "the runs agree without the remedy: this test proves nothing"
    thread_invariance.install(REFERENCE)
    same = at_threads(1, run, *args, out / "same")
    assert same[0] == full[0], "logged statistics differ"
    assert torch.equal(same[1], full[1]), "weights differ"


@pytest.mark.parametrize("fast", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["fast_path", "plain"])
def test_ppo_at_one_thread_trains_the_policy_two_threads_train(restore_threads, fresh_accelerate_state, shipped,
                                                              tmp_path, fast):
    assert_one_thread_reproduces_two(ppo_run, shipped, fast, out=tmp_path)


def sft_run(shipped, out):
    from rlhf_helpers.config import SFTConfig
    from rlhf_helpers.data import load_imdb
    from rlhf_helpers.policy.sft import pack_texts, train_sft

    _, lm, tokenizer, _ = shipped
    texts = load_imdb("offline").select(range(0, 25_000, 1000))["text"]
    blocks = pack_texts(texts, tokenizer, 64, max_blocks=16)
    config = SFTConfig(block_size=64, batch_size=8, max_steps=3, warmup_steps=1, eval_every=3, checkpoint_every=3)
    model = copy.deepcopy(lm)
    metrics = train_sft(model, tokenizer, blocks, blocks[:4], config, out, progress=False)
    return metrics["losses"], parameters(model)


def reward_run(shipped, out):
    from rlhf_helpers.config import RewardConfig
    from rlhf_helpers.data import load_imdb
    from rlhf_helpers.data.preferences import heldout_pairs, tokenize_pairs, training_pairs
    from rlhf_helpers.reward.model import RewardModel
    from rlhf_helpers.reward.training import train_reward_model

    _, lm, tokenizer, _ = shipped
    rows = load_imdb("offline").select(range(0, 25_000, 500)).add_column("imdb_index", list(range(50)))
    train = tokenize_pairs(training_pairs(rows, snippet_words=(3, 6)), tokenizer, 64)
    heldout = {v: tokenize_pairs(p, tokenizer, 64) for v, p in heldout_pairs(rows).items()}
    config = RewardConfig(max_steps=3, full_batch_size=8, snippet_batch_size=8, warmup_steps=1, eval_every=3,
                          log_every=1, checkpoint_every=3)
    model = RewardModel.from_policy(lm, seed=0)
    metrics = train_reward_model(model, tokenizer, train, heldout, config, out, progress=False)
    return [row["loss"] for row in metrics["train_log"]], parameters(model)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [sft_run, reward_run], ids=["sft", "reward"])
def test_sft_and_reward_training_at_one_thread_equal_two(restore_threads, fresh_accelerate_state, shipped, tmp_path,
                                                        stage):
    full = at_threads(REFERENCE, stage, shipped, tmp_path / "full")
    thread_invariance.install(REFERENCE)
    same = at_threads(1, stage, shipped, tmp_path / "same")
    assert same[0] == full[0] and torch.equal(same[1], full[1])


def dpo_run(lm, tokenizer, out):
    from test_dpo import LetterJudge, letter_score

    from rlhf_helpers.beyond_ppo.dpo_training import DPOTrainConfig, sample_preference_pairs, train_dpo
    from rlhf_helpers.evaluation import HeldOutEvaluator

    torch.manual_seed(0)
    prompts = [tokenizer.encode(t) for t in ["The movie was", "I rented this", "This film is", "What a"]]
    pairs = sample_preference_pairs(lm, tokenizer, prompts, letter_score, k=3, min_tokens=2, max_tokens=5)
    evaluator = HeldOutEvaluator(copy.deepcopy(lm), tokenizer, prompts, letter_score, {"letters": LetterJudge()},
                                 min_tokens=2, max_tokens=5)
    config = DPOTrainConfig(max_steps=4, batch_size=4, warmup_steps=1, eval_every=2, checkpoint_every=2,
                            learning_rate=1e-2, mixed_precision="no", beta=0.5)
    model = copy.deepcopy(lm)
    result = train_dpo(model, copy.deepcopy(lm), pairs, config, out, evaluator, progress=False)
    return without_timings(result["history"]), parameters(model)


@pytest.mark.slow
def test_dpo_training_at_one_thread_equals_two(restore_threads, fresh_accelerate_state, tiny_lm, small_tokenizer,
                                               tmp_path):
    assert_one_thread_reproduces_two(dpo_run, tiny_lm, small_tokenizer, out=tmp_path)


def trl_run(algorithm, out):
    """Two rounds of TRL's GRPO / RLOO (float32, as `trl_config` sets) from the shipped SFT policy against the
    shipped reward model."""
    from datasets import Dataset
    from test_trl_trainers import PROMPTS
    from transformers import GPT2LMHeadModel

    from rlhf_helpers.beyond_ppo.grpo_rloo import train_trl
    from rlhf_helpers.config import PPOConfig

    ppo = PPOConfig(max_minutes=None, max_steps=2, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                    response_max_tokens=8, learning_rate=1e-3)
    result = train_trl(algorithm, out, ppo, prompts=Dataset.from_dict({"prompt": PROMPTS}), num_generations=4)
    return without_timings(result["history"]), parameters(GPT2LMHeadModel.from_pretrained(out))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_grpo_and_rloo_at_one_thread_equal_two(restore_threads, fresh_accelerate_state, tmp_path, algorithm):
    assert_one_thread_reproduces_two(trl_run, algorithm, out=tmp_path)
