"""The exercises that run a model's forward pass: 5.3 `response_logprobs`, 5.4 `entropy_from_logits` (its edge cases),
and 8.4 `sequence_logprobs`.

Their CASES (tests/exercise_cases/cases_04_05.py, cases_08.py) run in tests/test_exercises.py. Here: the checks'
hand-written variants stand on a correct base (all switches off = the package), every variant the check knows can
be named, running a check leaves the notebook's random state and thread count alone, the notebooks' solutions equal
the package's functions bit for bit (notebook 05 says the step-0 log-ratio is exactly 0 with its solution), and the
claim of notebook 08's self-check (a prompt counted in both sequences of a pair cancels in DPO's loss) holds.
"""

import json
from pathlib import Path

import pytest
import torch

from rlhf_helpers.beyond_ppo.dpo import dpo_loss
from rlhf_helpers.beyond_ppo.dpo import sequence_logprobs as package_sequence_logprobs
from rlhf_helpers.exercises import ExerciseFailed, check_response_logprobs, check_sequence_logprobs
from rlhf_helpers.exercises.beyond import _sequence_cases
from rlhf_helpers.exercises.learner import has_solution, solution_only, stub_functions
from rlhf_helpers.exercises.ppo import (_entropy_cases, _response_cases, _response_logprobs_variant,
                                        check_entropy_from_logits, tiny_gpt2)
from rlhf_helpers.policy.logprobs import response_logprobs as package_response_logprobs
from rlhf_helpers.ppo.value_head import PolicyWithValueHead, response_logprobs_and_values

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def solution(notebook: str, name: str):
    """The function `name` as the solved notebook defines it (its solution cell, markers removed)."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and has_solution(source) and name in stub_functions(source):
            namespace = {"torch": torch}
            exec(compile(solution_only(source), f"{notebook}: {name}", "exec"), namespace)
            return namespace[name]
    raise AssertionError(f"{notebook} has no solution cell defining {name}")


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(seed=5)


# -- 5.3 response_logprobs ------------------------------------------------------------------------

def test_the_variants_with_every_switch_off_are_the_package(model):
    for case, q, qm, r, rm, temperature in _response_cases(model.config.vocab_size):
        with torch.no_grad():
            assert torch.allclose(_response_logprobs_variant(model, q, qm, r, rm, temperature),
                                  package_response_logprobs(model, q, qm, r, rm, temperature), atol=1e-6), case


MISTAKES = [
    (dict(window="own"), "read from its own column"),
    (dict(scale="none"), "the temperature is missing"),
    (dict(scale="multiply"), "you multiplied the logits by the temperature"),
    (dict(positions=False, attention=False), "neither the attention mask nor position ids"),
    (dict(positions=False), "the position ids are the default"),
    (dict(attention=False), "the attention mask is not passed"),
    (dict(normalise="softmax"), "these are probabilities"),
    (dict(normalise="wrong_axis"), "ran over the wrong axis"),
    (dict(normalise="none"), "these are the raw logits"),
    (dict(zero_padding=False), "the padding is not 0"),
]


@pytest.mark.parametrize("switches,fragment", MISTAKES, ids=[f for _, f in MISTAKES])
def test_every_variant_the_check_knows_is_named(switches, fragment):
    """Each mistake differs from the right answer on some case and from every mistake tried before it there."""
    def wrong(model, q, qm, r, rm, temperature=1.0):
        return _response_logprobs_variant(model, q, qm, r, rm, temperature, **switches)

    with pytest.raises(ExerciseFailed, match="response_logprobs") as failure:
        check_response_logprobs(wrong)
    assert fragment in str(failure.value)


def test_one_column_too_many_is_named():
    def unsliced(model, q, qm, r, rm, temperature=1.0):
        return torch.zeros(r.shape[0], r.shape[1] + 1, requires_grad=True)

    with pytest.raises(ExerciseFailed, match="one column too many"):
        check_response_logprobs(unsliced)


def test_a_check_leaves_the_random_state_and_the_threads_alone():
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    check_response_logprobs(package_response_logprobs)
    check_sequence_logprobs(package_sequence_logprobs)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_notebook_05s_solution_is_the_package_bit_for_bit(model):
    """Section 4 compares the policy's log-probs (the package's pass with the value head) with the reference's (the
    learner's function) and says the log-ratio is exactly 0 with the solution: so it must be, bit for bit."""
    mine = solution("05_ppo_from_scratch", "response_logprobs")
    policy = PolicyWithValueHead(model)
    for case, q, qm, r, rm, temperature in _response_cases(model.config.vocab_size):
        with torch.no_grad():
            ours = mine(model, q, qm, r, rm, temperature)
            assert torch.equal(ours, package_response_logprobs(model, q, qm, r, rm, temperature)), case
            if temperature == 1.0:
                assert torch.equal(ours, response_logprobs_and_values(policy, q, qm, r, rm)[0]), case


# -- 5.4 entropy_from_logits ----------------------------------------------------------------------

def test_the_entropy_cases_reach_both_nan_diagnoses():
    (_, moderate), (_, large), (_, banned) = _entropy_cases()
    assert torch.isfinite(torch.log(torch.softmax(moderate, -1))).all()
    assert torch.isinf(torch.log(torch.softmax(large, -1))).any()  # softmax underflows, log_softmax does not
    assert torch.isfinite(torch.log_softmax(large, -1)).all()
    assert torch.isinf(banned).any() and torch.isfinite(banned[..., 0]).all()  # one allowed token per position


def test_a_nan_on_moderate_logits_gets_the_generic_message():
    def nan_everywhere(logits):
        return torch.full(logits.shape[:-1], float("nan"))

    with pytest.raises(ExerciseFailed, match="NaN or inf where the answer is finite"):
        check_entropy_from_logits(nan_everywhere)


# -- 8.4 sequence_logprobs ------------------------------------------------------------------------

def test_notebook_08s_solution_is_the_package_bit_for_bit():
    mine = solution("08_beyond_ppo", "sequence_logprobs")
    model = tiny_gpt2(seed=8)
    for case, ids, attention, completion in _sequence_cases(model.config.vocab_size):
        with torch.no_grad():
            assert torch.equal(mine(model, ids, attention, completion),
                               package_sequence_logprobs(model, ids, attention, completion)), case


def test_a_prompt_counted_on_both_sides_of_a_pair_cancels_in_the_dpo_loss():
    """Notebook 08's self-check 5: summing over the attention mask adds the prompt's terms to the chosen and the
    rejected sum alike, so the loss is unchanged, while the implicit rewards are not."""
    policy, reference = tiny_gpt2(seed=1), tiny_gpt2(seed=2)
    prompt = [5, 9, 12, 3]
    chosen, rejected = [7, 8, 20], [30, 4, 4, 11, 2]
    rows = [prompt + chosen, prompt + rejected]
    width = max(map(len, rows))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    attention = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    completion = attention.clone()
    completion[:, :len(prompt)] = 0

    def loss_and_rewards(mask):
        with torch.no_grad():
            pc, pr = package_sequence_logprobs(policy, ids, attention, mask)
            rc, rr = package_sequence_logprobs(reference, ids, attention, mask)
        loss, chosen_reward, _ = dpo_loss(pc[None], pr[None], rc[None], rr[None], beta=0.5)
        return loss, chosen_reward

    right, wrong = loss_and_rewards(completion), loss_and_rewards(attention)
    assert torch.allclose(right[0], wrong[0], atol=1e-5)
    assert not torch.allclose(right[1], wrong[1], atol=1e-3)
