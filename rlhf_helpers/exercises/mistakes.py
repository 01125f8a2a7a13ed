"""What each exercise's check recognises: the listing behind the "common mistakes" box below every exercise.

``MISTAKES[name]`` lists, for exercise `name`, the mistakes its check names — each as ``(what the learner did, a
fragment of the message the check prints for it)``. `mistakes_box` renders the list as the collapsed markdown cell
that sits right after the exercise's check cell in the solved notebook (and so in the learner's copy);
``python scripts/make_learner_notebooks.py`` writes those cells. ``tests/test_exercises.py`` keeps the three in step:
every fragment is text of the check's module, every named diagnosis that CASES provoke is listed here, and every
notebook's box is the rendering of this list.

Only the diagnoses are listed: every check also says when a function is still the stub, when it raised (and on
which case), returned the wrong type or shape, or NaN / inf where the answer is finite.
"""

from __future__ import annotations

BOX_SUMMARY = "Common mistakes this check recognises"

MISTAKES: dict[str, list[tuple[str, str]]] = {
    # -- 00 --------------------------------------------------------------------------------------------------------
    "optimal_policy": [
        ("the weights π_ref·exp(r/β) are not divided by Z (they do not sum to 1)", "it does not sum to 1"),
        ("the exponent is −r/β (probability moves towards the low rewards)", "towards the LOW rewards"),
        ("the reward is multiplied by β instead of divided", "you multiplied the reward by beta"),
        ("the reference is left out (softmax(r/β) alone)", "the reference is missing"),
    ],
    # -- 01 --------------------------------------------------------------------------------------------------------
    "sample_lengths": [
        ("values outside low..high, or `low − 1` / `high + 1` returned", "the range starts at low"),
        ("`high` excluded (numpy's `integers(low, high)`)", "never returned high"),
        ("a fresh unseeded generator (two calls with the same seed differ)", "two calls with the same seed gave "
                                                                             "different lengths"),
        ("in range, but not the package's draws (another generator or draw order)", "not the package's draws"),
    ],
    "build_prompts": [
        ("a review of exactly `min_chars` characters kept (>= instead of >)", "*longer than* min_chars"),
        ("the prompts not cut to n tokens", "the prompts are not cut"),
        ("the review cut to n characters instead of n tokens", "you cut the review to n *characters*"),
        ("the reviews not cleaned (`<br />` tags left in)", "the <br /> tags are still in the prompts"),
        ("the upper bound `high` excluded", "the prompt lengths never reach high"),
        ("lengths drawn for every review, before the filter", "the lengths were drawn for every review"),
        ("one length for every prompt", "every prompt has the same length"),
        ("rows dropped or reordered; labels not following their reviews", "the labels do not follow their reviews"),
        ("the query not `tokenizer.decode(input_ids)`", "the query is "),
    ],
    # -- 02 --------------------------------------------------------------------------------------------------------
    "next_token_loss": [
        ("no shift (logits[:, t] compared with token t)", "no shift"),
        ("shifted the wrong way round", "shifted the wrong way round"),
        ("the sign flipped (the log-likelihood)", "the sign is flipped"),
        ("the sum over tokens instead of the mean", "that is the sum over tokens"),
        ("the perplexity exp(loss) returned", "that is the perplexity"),
        ("no gradient (`.item()`, `.detach()`, numpy)", "no gradient"),
    ],
    "top_k_filter": [
        ("removed tokens set to 0 instead of −inf", "removed tokens got 0"),
        ("one token too many per row (the (k+1)-th kept)", "one token too many per row"),
        ("one token too few per row (`<=` instead of `<`)", "one token too few per row"),
        ("probabilities returned instead of logits", "you returned probabilities"),
        ("the mask inverted (the k best removed)", "the mask is inverted"),
        ("a tie at the k-th value broken by position", "in a tie at the k-th value"),
        ("`k = 0` not treated as 'no filtering'", "k = 0 means 'no top-k filtering'"),
        ("the input logits changed in place", "changed its input `logits` in place"),
    ],
    "top_p_filter": [
        ("removed tokens set to 0 instead of −inf", "removed tokens got 0"),
        ("the token that crosses p dropped", "you dropped the token whose cumulative probability crosses p"),
        ("the cumulative sum in vocabulary order (not sorted)", "the cumulative sum runs in vocabulary order"),
        ("sorted from the least likely token up", "sorted from the least likely up"),
        ("logits accumulated instead of probabilities", "you accumulated logits"),
        ("the input logits changed in place", "changed its input `logits` in place"),
    ],
    # -- 03 --------------------------------------------------------------------------------------------------------
    "bradley_terry_loss": [
        ("the margin's sign flipped (rejected − chosen)", "the sign of the margin is flipped"),
        ("the log-likelihood returned (the loss not negated)", "the loss is negative"),
        ("the sum over pairs instead of the mean", "that is the sum over pairs"),
        ("each text scored on its own instead of the difference", "you scored each text on its own"),
        ("`log(sigmoid(x))`, which underflows to −inf on large margins", "torch.log(torch.sigmoid(x)) underflows"),
        ("no gradient (`.item()`, `.detach()`, numpy)", "the result carries no gradient"),
    ],
    "last_token_index": [
        ("`mask.sum(1) − 1` (right only for right padding)", "that is mask.sum(1) - 1"),
        ("one past the last real token (`mask.sum(1)`)", "one past the last real token"),
        ("the first real token (`mask.argmax(1)`)", "that is the *first* real token"),
        ("the distance from the end (argmax on the flipped row, not converted back)", "that is the distance of "
                                                                                      "the last real token"),
        ("the last column for every row", "that is the last column for every row"),
        ("float indices", "indices must be "),
    ],
    "pair_accuracy": [
        ("ties counted as wins (>=)", "ties count as wins"),
        ("ties counted as half a win", "ties count as half a win"),
        ("the number of pairs ranked right instead of the share", "that is the number of pairs ranked right"),
        ("chosen and rejected swapped", "chosen and rejected are swapped"),
        ("the error rate 1 − accuracy", "that is the error rate"),
        ("a bool returned", "returned a bool"),
    ],
    "reward_model_step": [
        ("chosen and rejected swapped", "chosen and rejected are swapped: that loss"),
        ("the attention mask ignored: the reward read at the last position, a pad token", "ignores the attention mask"),
        ("the sum over the pairs instead of the mean", "that loss is the sum over the pairs"),
        ("no `optimizer.zero_grad()`: the previous call's gradients added to this one's",
         "added the gradients of the previous call"),
        ("no `loss.backward()` (or `zero_grad()` between backward and step)", "no gradient reached them"),
        ("no `optimizer.step()`", "you never took a step"),
        ("the loss tensor returned instead of `loss.item()`", "returned a torch.Tensor"),
    ],
    # -- 04 --------------------------------------------------------------------------------------------------------
    "group_normalised_advantages": [
        ("the group's mean but the whole batch's std", "the std is the whole batch's"),
        ("normalised over the whole batch", "you normalised over the whole batch"),
        ("the biased std (divided by k)", "that is the biased std"),
        ("centred but not divided by the std (Dr. GRPO)", "not divided by the group's std"),
        ("groups read the wrong way (`view(k, -1)`)", "the groups are read the wrong way"),
        ("divided by the std without TRL's + 1e-4", "you divided by the group's std alone"),
        ("an epsilon of 1e-8 instead of 1e-4", "your epsilon is too small"),
    ],
    "grpo_loss": [
        ("k1 instead of k3 in the KL term", "the KL term is k1"),
        ("k3's log-ratio the wrong way round", "the KL term's log-ratio is the wrong way round"),
        ("k2 instead of k3", "the KL term is k2"),
        ("k3 without its − 1", "the KL term misses its − 1"),
        ("the KL term not multiplied by the ratio ρ (TRL's bias correction)", "not multiplied by the ratio ρ"),
        ("the KL term with the wrong sign, missing, or not multiplied by β", "the KL term has the wrong sign"),
        ("the min of the two loss terms instead of −min of the objective's", "you took the min of the two *loss* "
                                                                             "terms"),
        ("the clipped objective not negated", "the clipped term is not negated"),
        ("no clipping, or only the clipped term", "there is no clipping"),
        ("the ratio the wrong way round (π_old / π_θ)", "the ratio is the wrong way round"),
        ("the `\"dapo\"` normalisation where `loss_type` is `\"grpo\"`",
         "normalisation (every real token of the batch weighs the same)"),
        ("the `\"grpo\"` normalisation where `loss_type` is `\"dapo\"`",
         "normalisation (per completion, then over completions)"),
        ("the padding counted in the mean", "you averaged over every position, padding included"),
    ],
    "rloo_advantages": [
        ("the baseline includes the sample itself (r − group mean)", "the baseline includes the sample itself"),
        ("one left out of the whole batch instead of the group", "you left one out of the whole batch"),
        ("centred on the whole batch's mean", "you centred on the whole batch's mean"),
        ("the others' sum divided by k instead of k − 1", "there are k − 1 others"),
        ("groups read the wrong way (`view(k, -1)`)", "the groups are read the wrong way"),
    ],
    # -- 05 --------------------------------------------------------------------------------------------------------
    "masked_mean": [
        ("averaged over every position, padding included", "you averaged over every position, padding included"),
        ("the masked sum divided by B·T", "you divided by B*T"),
        ("the mean of per-row means", "that is the mean of per-row means"),
    ],
    "masked_whiten": [
        ("whitened over the padding too", "you whitened over the padding too"),
        ("padding set to 0 but still counted in the mean and std", "the mean and std still count the padding"),
        ("the padding not set to 0", "but the padding is not 0"),
        ("the biased std (divided by n)", "that is the biased std"),
    ],
    "response_logprobs": [
        ("each token's log-prob read from its own column (logits[:, P:] instead of logits[:, P-1:-1])",
         "read from its own column"),
        ("the window not cut at the end (logits[:, P-1:], R + 1 columns)", "one column too many"),
        ("the sampling temperature forgotten", "the temperature is missing"),
        ("the logits multiplied by the temperature instead of divided", "you multiplied the logits by the temperature"),
        ("neither the attention mask nor position ids passed (model(input_ids) alone)",
         "neither the attention mask nor position ids"),
        ("the default position ids 0 … L−1 with left-padded queries", "the position ids are the default"),
        ("the attention mask not passed", "the attention mask is not passed"),
        ("probabilities (softmax without the log)", "these are probabilities"),
        ("log_softmax over the positions instead of the vocabulary", "ran over the wrong axis"),
        ("the raw logits read at the tokens, not normalised", "these are the raw logits"),
        ("the padding not set to 0", "but the padding is not 0: multiply by response_mask"),
        ("no gradient (torch.no_grad(), .detach() or .item() inside)", "no gradient reaches the model"),
    ],
    "entropy_from_logits": [
        ("NaN on banned tokens (logit −inf): 0 · log 0 computed as 0 · (−inf)", "NaN where a token is banned"),
        ("`torch.log(torch.softmax(x))`, which underflows to −inf on large logits", "NaN or inf on large logits"),
        ("the sign flipped (Σ p log p)", "the sign is flipped: the entropy is -sum p log p"),
        ("bits (log base 2) instead of nats", "that is the entropy in bits"),
        ("the logits used in place of the log-probabilities", "you used the logits in place of the log-probabilities"),
        ("the softmax over the positions instead of the vocabulary", "the softmax ran over the wrong axis"),
    ],
    "kl_penalty": [
        ("k1's sign flipped (log π_ref − log π)", "k1's sign is flipped"),
        ("|k1| (the absolute value, to make it non-negative)", "that is |k1|"),
        ("k3's log-ratio the wrong way round (KL(π_ref ‖ π))", "k3's log-ratio is the wrong way round"),
        ("k2 = ½ (log r)² instead of k3", "that is k2"),
        ("k3 without its − 1", "k3 misses its - 1"),
        ("k3 with + log r instead of − log r", "you added log r"),
        ("one estimator returned whatever `estimator` asks for", "where estimator="),
    ],
    "per_token_rewards": [
        ("the score on the last column instead of the last real token", "the score sits on the last *column*"),
        ("the KL penalty's sign flipped", "the KL's sign is flipped"),
        ("the KL not multiplied by kl_coef", "the KL is not multiplied by kl_coef"),
        ("a KL penalty charged on the padding", "the padding is charged a KL penalty"),
        ("the score added at every token", "the score is added at every token"),
        ("the score on the first token", "the score sits on the *first* token"),
        ("k3 instead of k1", "that is the k3 estimator"),
    ],
    "compute_gae": [
        ("rewards masked but values not: bootstrapping from padded values", "bootstraps from padded values"),
        ("neither masked: bootstrapping from the padding", "you bootstrapped from the padding"),
        ("λ missing (λ = 1)", "λ is missing"),
        ("γ missing", "γ is missing"),
        ("off by one in the next value (V_t or V_{t+2} instead of V_{t+1})", "off by one in the next value"),
        ("discounted by γ²·λ", "you discounted the advantages by γ²·λ"),
        ("returns equal to the advantages", "returns equal the advantages"),
        ("returns as A − V instead of A + V", "returns are A_t − V_t"),
        ("returns as the discounted rewards-to-go", "those are the discounted rewards-to-go"),
        ("returns not 0 on padding", "the returns are right on real tokens but not 0 on padding"),
    ],
    "clipped_policy_loss": [
        ("the min of the two loss terms", "you took the min of the two *loss* terms"),
        ("the objective returned (not negated)", "that is the objective min(ρ·A, clip(ρ)·A)"),
        ("no clipping", "there is no clipping"),
        ("only the clipped term", "you used only the clipped term"),
        ("averaged over the padding too, or divided by B·T", "padding included"),
        ("the ratio the wrong way round", "the ratio is the wrong way round"),
        ("the mean of per-row means", "that is the mean of per-row means"),
        ("no gradient reaches the log-probs", "the loss carries no gradient"),
    ],
    "clipped_value_loss": [
        ("the value clipped around 0 instead of its change", "you clipped the value around 0"),
        ("min instead of max of the two squared errors", "min instead of max"),
        ("the ½ missing", "the ½ is missing"),
        ("no clipping, or only the clipped error", "there is no clipping"),
        ("averaged over the padding too, or divided by B·T", "padding included"),
        ("no gradient reaches the values", "the loss carries no gradient"),
    ],
    "adaptive_kl_update": [
        ("the error not clipped to ±0.2", "the error is not clipped"),
        ("the sign flipped (β falls when the KL is too high)", "the sign is flipped"),
        ("n_steps ignored", "n_steps is ignored"),
        ("the step not scaled by n_steps / horizon", "the step is err alone"),
        ("the error as kl − target instead of kl / target − 1", "the error is kl − target"),
        ("the whole step clipped instead of the error", "you clipped the whole step"),
        ("the factor returned instead of the new β", "that is the factor 1 + err · n_steps / horizon"),
    ],
    # -- 06 --------------------------------------------------------------------------------------------------------
    "rollout": [
        ("the per-token KL penalty with the wrong sign", "the KL penalty has the wrong sign"),
        ("GAE with λ = 1", "these are GAE with lambda = 1"),
        ("the response scored alone instead of query + response", "score query + response"),
        ("any other field that differs, named with the function that computes it", "the sampled tokens differ"),
    ],
    "ppo_update": [
        ("the permutation: the rollouts not shuffled, the first epoch's order repeated, or another generator",
         "the permutation differs"),
        ("the advantages whitened once over the whole rollout instead of per mini-batch",
         "you whitened them ONCE over the whole"),
        ("the advantages not whitened", "the advantages are not whitened"),
        ("the policy loss differs (its gradient, with the value loss's agreeing)", "the policy loss differs"),
        ("the value loss differs, lacks config.vf_coef, or is missing", "the value loss differs"),
        ("gradients accumulated across mini-batches (no `zero_grad`)", "it holds the previous mini-batch's too"),
        ("the gradient norm not clipped, or clipped to another norm", "the gradient norm differs"),
        ("one epoch only, or another number of optimiser steps", "the number of optimiser steps differs"),
        ("no optimiser step at all", "the weights did not change"),
    ],
    # -- 07 --------------------------------------------------------------------------------------------------------
    "distinct_n": [
        ("the responses joined, so n-grams run across two", "you joined the responses into one text"),
        ("each response's distinct-n averaged instead of pooled", "you averaged each response's distinct-n"),
        ("character n-grams instead of word n-grams", "these are character n-grams"),
    ],
    "fit_rl_curve": [
        ("fitted against the KL instead of d = √KL", "you fitted against the KL itself"),
        ("the gold itself fitted instead of its gain over the initial policy", "fit the GAIN over the initial policy"),
        ("an intercept column added", "the form has no intercept"),
        ("the best-of-n form d(α − βd)", "that is the best-of-n form"),
    ],
    "best_of_n_kl": [
        ("log n alone", "that is log n alone"),
        ("(n − 1)/n added instead of subtracted", "it is subtracted"),
        ("log base 2 instead of the natural log", "log base 2"),
    ],
    "debug_diagnosis": [
        ("the healthy run called broken", "it is the healthy run"),
        ("the run with the flipped KL penalty not recognised", "the KL penalty's sign is flipped"),
        ("the run whose reference is the policy itself not recognised", "the reference is the policy itself"),
        ("the run trained on raw scores not recognised", "the reward model's raw scores"),
        ("the run without a value loss not recognised", "the value loss is switched off"),
        ("the run with negated advantages not recognised", "the advantages have the wrong sign"),
        ("the run whose ratio is always 1 not recognised", "the ratio is always 1"),
        ("the run with the top-p mismatch not recognised", "kept the sampler's log-probs"),
        ("a name that is not one of the options", "is not one of the options"),
        ("a run left out", "has no diagnosis"),
    ],
    # -- 08 --------------------------------------------------------------------------------------------------------
    "kl_regularised_optimum": [
        ("log Z not subtracted (the probabilities do not sum to one)", "do not sum to one"),
        ("the reward multiplied by β instead of divided", "you multiplied the reward by beta"),
        ("the reference left out (a uniform prior)", "this is the optimum with no reference"),
        ("normalised over the prompts (dim 0)", "you normalised over the prompts"),
    ],
    "implicit_reward": [
        ("β left out", "you left out beta"),
        ("divided by β", "you divided by beta"),
        ("the sign reversed (log π_ref − log π)", "the sign is reversed"),
        ("the reference left out", "you left out the reference"),
        ("the result still carries a gradient", "the result still carries a gradient"),
    ],
    "dpo_loss": [
        ("β left out", "you left out beta"),
        ("the margin's sign reversed: both log-ratios reversed (log π_ref − log π), or chosen and rejected swapped",
         "mistakes give exactly this"),
        ("the reference left out (policy log-probs compared)", "you left out the reference"),
        ("the sum over the pairs instead of the mean", "this is the sum over the pairs"),
        ("the log-likelihood returned (not negated)", "this is the log-likelihood"),
    ],
    "sequence_logprobs": [
        ("the prompt tokens counted (the attention mask used instead of the completion mask)",
         "the prompt tokens are counted"),
        ("the padding counted (no mask)", "the padding is counted"),
        ("the mask not shifted like the targets (completion_mask[:, :-1])", "the mask is off by one"),
        ("no shift (each token read from the logits at its own column)", "no shift: each token is read"),
        ("the mean over the completion's tokens, or over the row, instead of the sum", "DPO uses the SUM"),
        ("no gradient (torch.no_grad(), .detach() or .item() inside)", "no gradient reaches the model"),
    ],
}


def mistakes_box(name: str) -> str:
    """The markdown of the collapsed box listing what exercise `name`'s check recognises."""
    items = "\n".join(f"- {what}" for what, _ in MISTAKES[name])
    return (f"<details><summary>{BOX_SUMMARY}</summary>\n\n"
            f"`check_{name}` names each of these when your function makes it:\n\n{items}\n\n"
            "It also says when the function is still the stub, raised an error (and on which case), returned the\n"
            "wrong type or shape, or NaN where the answer is finite.\n\n</details>")
