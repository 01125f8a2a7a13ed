"""The `gpt2` profile end to end, offline, from a Hugging Face cache that holds what a user downloaded once.

No hub is reachable here, so the fixture builds stand-ins in a temporary ``HF_HOME``, laid out as the libraries
lay out what they download:

* ``hub/models--gpt2/snapshots/<commit>/``: a GPT-2 with the hub model's *sizes where they matter to the code* —
  a 50,257-token byte-level BPE with ``<|endoftext|>`` = 50256 and no pad token, a 1,024-token context — but 2
  layers 64 wide, random (the 124 M weights would only make the test slow);
* ``datasets/stanfordnlp___imdb/plain_text/0.0.0/<hash>/``: IMDb rows as the ``stanfordnlp/imdb`` dataset, the
  way ``load_dataset`` caches it (2,000 train rows of the real reviews, 200 test rows).

Then ``python -m rlhf_helpers --profile gpt2 run`` runs every stage (tokenizer, data, SFT, reward model, PPO,
evaluation) with ``HF_HUB_OFFLINE=1``, with tiny budgets. A missing piece is refused before any work, naming it
and every way out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

pytestmark = pytest.mark.slow  # trains every stage, in a process of its own

REPO = Path(__file__).resolve().parent.parent
COMMIT = "a" * 40
GPT2_VOCAB, GPT2_EOS, GPT2_CONTEXT = 50_257, 50_256, 1_024


def gpt2_sized_tokenizer(texts):
    """A byte-level BPE of GPT-2's size: 50,256 learned tokens (fillers if the texts run out of merges), then
    ``<|endoftext|>`` as id 50,256, as the hub's `gpt2` has it; no pad token."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=GPT2_EOS, min_frequency=1, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer)
    fillers = GPT2_EOS - core.get_vocab_size()
    core.add_tokens([AddedToken(f"<|unused{k}|>", special=True) for k in range(fillers)])
    core.add_special_tokens(["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", model_max_length=GPT2_CONTEXT)
    assert len(tokenizer) == GPT2_VOCAB and tokenizer.eos_token_id == GPT2_EOS and tokenizer.pad_token is None
    return tokenizer


def cache_imdb(datasets_cache: Path, rows: dict) -> None:
    """IMDb splits as `datasets` caches ``stanfordnlp/imdb`` after a first ``load_dataset``."""
    import datasets
    from datasets import ClassLabel, Dataset, Features, Value

    root = datasets_cache / "stanfordnlp___imdb" / "plain_text" / "0.0.0" / COMMIT
    root.mkdir(parents=True)
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    info = datasets.DatasetInfo(features=features, dataset_name="imdb", config_name="plain_text")
    info.splits = datasets.SplitDict()
    for split, (texts, labels) in rows.items():
        part = Dataset.from_dict({"text": texts, "label": labels}, features=features)
        saved = datasets_cache.parent / f"saved_{split}"
        part.save_to_disk(str(saved))
        shutil.copy(next(saved.glob("*.arrow")), root / f"imdb-{split}.arrow")
        shutil.rmtree(saved)
        info.splits.add(datasets.SplitInfo(name=split, num_examples=len(texts), dataset_name="imdb"))
    info.write_to_directory(str(root))


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, imdb):
    home = tmp_path_factory.mktemp("hf_home")
    # 1,000 negative and 1,000 positive train reviews (the CSV is sorted by label), 200 for "test"
    picked = list(range(0, 1000)) + list(range(12_500, 13_500))
    train = imdb.select(picked)
    test = imdb.select(range(24_000, 24_200))
    tokenizer = gpt2_sized_tokenizer(imdb.select(range(0, 25_000, 2))["text"])
    snapshot = home / "hub" / "models--gpt2" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (home / "hub" / "models--gpt2" / "refs").mkdir()
    (home / "hub" / "models--gpt2" / "refs" / "main").write_text(COMMIT)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=GPT2_VOCAB, n_positions=GPT2_CONTEXT, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=GPT2_EOS, eos_token_id=GPT2_EOS)
    GPT2LMHeadModel(config).save_pretrained(snapshot)
    tokenizer.save_pretrained(str(snapshot))
    cache_imdb(home / "datasets", {"train": (train["text"], train["label"]), "test": (test["text"], test["label"])})
    return home


def run_gpt2(hf_home: Path, artifacts: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "RLHF_ARTIFACTS": str(artifacts), "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    return subprocess.run([sys.executable, "-m", "rlhf_helpers", "--profile", "gpt2", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)


TINY_BUDGETS = [
    "--sft.max-steps", "2", "--sft.batch-size", "2", "--sft.block-size", "64", "--sft.eval-blocks", "2",
    "--sft.max-train-blocks", "16", "--sft.warmup-steps", "1", "--sft.eval-every", "2",
    "--reward.max-steps", "2", "--reward.full-batch-size", "2", "--reward.snippet-batch-size", "2",
    "--reward.max-length", "64", "--reward.eval-pairs", "4", "--reward.warmup-steps", "1", "--reward.eval-every", "2",
    "--reward.normalisation-prompts", "8",
    "--ppo.max-steps", "2", "--ppo.batch-size", "4", "--ppo.mini-batch-size", "4", "--ppo.checkpoint-every", "1",
    "--evaluation.n-prompts", "4",
]


def test_the_gpt2_profile_runs_end_to_end_from_the_local_caches(hf_home, tmp_path):
    done = run_gpt2(hf_home, tmp_path, "run", *TINY_BUDGETS)
    assert done.returncode == 0, done.stderr[-3000:]
    profile = tmp_path / "gpt2"
    card = json.loads((profile / "run_card_run.json").read_text())
    metrics = card["metrics"]
    # every stage ran, on the hub's sizes
    assert metrics["tokenizer"]["vocab_size"] == GPT2_VOCAB
    assert metrics["data"]["imdb_rows"] == 2000
    assert metrics["sft"]["steps"] == 2 and metrics["reward"]["steps"] == 2 and metrics["ppo"]["steps"] == 2
    assert set(metrics["evaluate"]) >= {"sft", "ppo"}
    policy_config = json.loads((profile / "ppo_policy" / "config.json").read_text())
    assert policy_config["vocab_size"] == GPT2_VOCAB and policy_config["n_positions"] == GPT2_CONTEXT
    assert (profile / "report.png").exists()
    # the SFT policy it trained is what the profile's name means now (`rlhf_helpers.sources`)
    assert str(profile / "sft_policy") in json.dumps(metrics["sft"])


def test_a_missing_cache_entry_is_named_with_every_way_out(hf_home, tmp_path):
    empty = tmp_path / "empty_home"
    empty.mkdir()
    done = run_gpt2(empty, tmp_path / "artifacts", "data")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr
    for words in ("stanfordnlp/imdb", "gpt2", "not in the local caches", "HF_HUB_OFFLINE",
                  "--dataset-source offline", "local directory", "--profile tiny"):
        assert words in message, (words, message)
