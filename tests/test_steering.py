"""Steering (featsim.steering, featsim.steering_transfer): hooks, effects, transfer and nulls on tiny models."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from featsim.errors import ConfigError
from featsim.steering import Steerer, agreement_matrix, heldout_prompts, keyword_token_ids, steering_hook
from featsim.steering_config import SteeringConfig, steered_positions


def tiny_model(seed: int = 0, d_model: int = 16, n_layers: int = 2, d_vocab: int = 23, rotary: bool = False):
    """A randomly initialised HookedTransformer (no training: only the arithmetic is tested)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(d_model=d_model, n_layers=n_layers, d_head=4, n_heads=d_model // 4, d_mlp=32,
                                  n_ctx=12, d_vocab=d_vocab, act_fn="gelu", normalization_type="LN", seed=seed,
                                  positional_embedding_type="rotary" if rotary else "standard")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        model = HookedTransformer(cfg)
    model.eval()
    return model


def prompts(n: int = 5, length: int = 8, d_vocab: int = 23, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, d_vocab, size=(n, length))


def manual_last_logprobs(model, tokens, hook: str, vector: np.ndarray, alpha: float, mask: np.ndarray):
    """Oracle: the clean residual at `hook` (resid_post of block L) plus alpha * v at `mask`, then the blocks
    after L run by hand (start_at_layer), log-softmax at the last position."""
    layer = int(hook.split(".")[1])
    tokens = torch.as_tensor(tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        residual = cache[hook].clone()
        residual[:, torch.as_tensor(mask)] += alpha * torch.as_tensor(vector, dtype=residual.dtype)
        logits = model(residual, start_at_layer=layer + 1)
    return torch.log_softmax(logits[:, -1], dim=-1).numpy()


@pytest.mark.parametrize("positions", ["last", 3])
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("fast", [True, False])
def test_steering_adds_alpha_v_at_the_chosen_positions(positions, layer, fast):
    model = tiny_model()
    tokens = prompts()
    hook = f"blocks.{layer}.hook_resid_post"
    vectors = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    steerer = Steerer(model, hook, tokens, positions=positions, fast=fast)
    steered = steerer.steered_logprobs(torch.as_tensor(vectors), 1.7).numpy()  # [3, P, V]
    mask = steered_positions(tokens.shape[1], positions)
    for i, vector in enumerate(vectors):
        expected = manual_last_logprobs(model, tokens, hook, vector, 1.7, mask)
        np.testing.assert_allclose(steered[i], expected, atol=2e-5)


def test_steering_hook_changes_exactly_the_steered_positions():
    model = tiny_model()
    tokens = torch.as_tensor(prompts())
    hook = "blocks.0.hook_resid_post"
    mask = torch.as_tensor(steered_positions(8, 5))
    deltas = torch.randn(tokens.shape[0], 16)
    seen = {}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        with model.hooks(fwd_hooks=[(hook, steering_hook(deltas, mask)),
                                    (hook, lambda act, hook: seen.setdefault("act", act.clone()))]):
            model(tokens)
    difference = (seen["act"] - cache[hook]).numpy()
    np.testing.assert_allclose(difference[:, 5:], np.repeat(deltas.numpy()[:, None], 3, axis=1), atol=1e-6)
    assert np.all(difference[:, :5] == 0)


def test_fast_path_matches_the_full_forward_with_rotary_positions():
    model = tiny_model(rotary=True)
    tokens = prompts()
    vectors = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    fast = Steerer(model, "blocks.0.hook_resid_post", tokens, fast=True)
    full = Steerer(model, "blocks.0.hook_resid_post", tokens, fast=False)
    assert fast._fast and not full._fast
    np.testing.assert_allclose(fast.steered_logprobs(torch.as_tensor(vectors), 2.0).numpy(),
                               full.steered_logprobs(torch.as_tensor(vectors), 2.0).numpy(), atol=2e-5)


def test_zero_vector_changes_nothing():
    model = tiny_model()
    steerer = Steerer(model, "blocks.0.hook_resid_post", prompts(), positions=2)
    effects = steerer.effects(np.zeros((2, 16)), alpha=5.0, keyword_sets=[np.array([1, 2])], keep_signatures=True)
    assert np.all(effects.signatures == 0)
    np.testing.assert_allclose(effects.kl, 0, atol=1e-7)
    np.testing.assert_allclose(effects.keyword_mass, 0, atol=1e-7)


def test_effect_measures_match_a_direct_computation():
    model = tiny_model()
    tokens = prompts()
    vector = np.random.default_rng(4).standard_normal(16).astype(np.float32)
    steerer = Steerer(model, "blocks.1.hook_resid_post", tokens)
    keywords = np.array([3, 7, 11])
    reference = np.random.default_rng(5).standard_normal((5, 23))
    effects = steerer.effects(vector[None], 1.3, keyword_sets=[keywords], reference=reference, keep_signatures=True)
    clean = manual_last_logprobs(model, tokens, "blocks.1.hook_resid_post", np.zeros(16), 0.0, np.ones(8, bool))
    steered = manual_last_logprobs(model, tokens, "blocks.1.hook_resid_post", vector, 1.3,
                                   steered_positions(8, "last"))
    p, q = np.exp(clean.astype(np.float64)), np.exp(steered.astype(np.float64))
    assert effects.kl[0] == pytest.approx(np.mean(np.sum(p * np.log(p / q), axis=1)), rel=1e-4)
    mass = np.log(q[:, keywords].sum(1)) - np.log(p[:, keywords].sum(1))
    assert effects.keyword_mass[0, 0] == pytest.approx(mass.mean(), rel=1e-4, abs=1e-6)
    agreement = np.mean([np.corrcoef(steered[i] - clean[i], reference[i])[0, 1] for i in range(5)])
    assert effects.agreement[0] == pytest.approx(agreement, abs=1e-5)


def test_agreement_matrix_against_numpy():
    rng = np.random.default_rng(6)
    rows, cols = rng.standard_normal((3, 4, 9)), rng.standard_normal((2, 4, 9))
    expected = [[np.mean([np.corrcoef(rows[i, p], cols[j, p])[0, 1] for p in range(4)]) for j in range(2)]
                for i in range(3)]
    np.testing.assert_allclose(agreement_matrix(rows, cols), expected, atol=1e-12)


def test_heldout_prompts_use_only_heldout_rows_with_a_data_token_at_the_end():
    tokens = np.arange(60).reshape(6, 10)
    mask = np.ones((6, 10), bool)
    mask[2, 3] = False  # row 2 ends its prompt on a document boundary
    heldout = np.array([False, True, True, False, True, True])
    chosen = heldout_prompts(tokens, mask, heldout, n_prompts=10, prompt_length=4, seed=0)
    assert sorted(chosen[:, 0] // 10) == [1, 4, 5]
    assert chosen.shape == (3, 4)
    with pytest.raises(ConfigError, match="steering.prompt_length"):
        heldout_prompts(tokens, mask, heldout, n_prompts=2, prompt_length=11, seed=0)


def test_keyword_tokens_are_whole_word_matches(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from featsim.concepts import concept_from_mapping

    vocab = {"<unk>": 0, "dog": 1, "Cat": 2, "dogma": 3, "the": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    concept = concept_from_mapping({"name": "animal", "description": "animals", "keywords": ["dog", "cat"],
                                    "case": "insensitive"},
                                   tmp_path / "animal.yaml")
    assert keyword_token_ids(tokenizer, concept).tolist() == [1, 2]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="steering.positions"):
        SteeringConfig(positions=16, prompt_length=16)
    with pytest.raises(ConfigError, match="steering.transfer"):
        SteeringConfig(transfer=("linear",))
    with pytest.raises(ConfigError, match="steering.alphas"):
        SteeringConfig(alphas=(0.5, -1.0))
    with pytest.raises(ConfigError, match="steering"):
        SteeringConfig.from_config({"alpha": [1.0]})


# ---------------------------------------------------------------- transfer, nulls and statistics

from featsim.steering_transfer import (TransferCell, diagonal_dominance, dominance_test, mean_direction,  # noqa: E402
                                       permutation_p, procrustes_map, random_directions)


def identity_cell(decoder: np.ndarray) -> TransferCell:
    latents = np.arange(decoder.shape[0])
    return TransferCell(decoder, decoder, latents, latents)


@pytest.mark.parametrize("method", ["pairing", "procrustes"])
def test_identity_pairing_of_a_model_with_itself_reproduces_self_steering(method):
    model = tiny_model()
    decoder = np.random.default_rng(7).standard_normal((40, 16))
    latents = np.array([3, 8, 21])
    cell = identity_cell(decoder)
    vector_a = mean_direction(decoder, latents)
    vector_b = cell.pairing_transfer(latents) if method == "pairing" else cell.procrustes_transfer(vector_a, latents)
    np.testing.assert_allclose(vector_b, vector_a, atol=1e-10)
    steerer = Steerer(model, "blocks.0.hook_resid_post", prompts())
    self_effect = steerer.effects(vector_a[None], 3.0, keep_signatures=True)
    transferred = steerer.effects(vector_b[None], 3.0, reference=self_effect.signatures[0])
    assert transferred.agreement[0] == pytest.approx(1.0, abs=1e-6)


def test_procrustes_map_matches_scipy_and_recovers_a_planted_rotation():
    from scipy.linalg import orthogonal_procrustes
    from scipy.stats import ortho_group

    rng = np.random.default_rng(8)
    source, target = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    np.testing.assert_allclose(procrustes_map(source, target), orthogonal_procrustes(source, target)[0], atol=1e-10)
    rotation = ortho_group.rvs(6, random_state=9)
    np.testing.assert_allclose(procrustes_map(source, source @ rotation), rotation, atol=1e-10)
    wide = procrustes_map(source, rng.standard_normal((50, 9)))  # d_a < d_b: orthonormal rows
    np.testing.assert_allclose(wide @ wide.T, np.eye(6), atol=1e-10)


def test_pairing_transfer_averages_the_partners_decoder_rows():
    decoder_a, decoder_b = np.eye(4), np.diag([2.0, 3.0, 4.0, 5.0])
    cell = TransferCell(decoder_a, decoder_b, np.array([0, 1, 2]), np.array([3, 1, 0]))
    np.testing.assert_allclose(cell.pairing_transfer(np.array([0, 1])), np.array([0, 1, 0, 1]) / np.sqrt(2))
    assert cell.partners(np.array([3])).size == 0


def test_self_steering_null_p_values_are_uniform_under_random_vectors():
    """Observed vectors drawn like the null: P(p <= k/(m+1)) = k/(m+1) by exchangeability."""
    from scipy.stats import binomtest

    model = tiny_model(seed=3)
    steerer = Steerer(model, "blocks.1.hook_resid_post", prompts(n=4, length=6))
    n_tests, m = 300, 19
    kl = steerer.effects(random_directions(n_tests * (m + 1), 16, np.random.default_rng(10)), 2.0).kl
    kl = kl.reshape(n_tests, m + 1)
    p = np.array([permutation_p(row[0], row[1:]) for row in kl])
    assert p.min() >= 1 / (m + 1)
    for k in (2, 5, 10):
        assert binomtest(int(np.sum(p <= k / (m + 1))), n_tests, k / (m + 1)).pvalue > 0.001


def test_transfer_null_p_values_are_uniform_under_random_pairings():
    from scipy.stats import binomtest

    model = tiny_model(seed=4)
    steerer = Steerer(model, "blocks.0.hook_resid_post", prompts(n=4, length=6))
    rng = np.random.default_rng(11)
    cell = TransferCell(np.eye(16), rng.standard_normal((60, 16)), np.arange(60), np.arange(60))
    reference = steerer.effects(random_directions(1, 16, rng), 2.0, keep_signatures=True).signatures[0]
    n_tests, m = 200, 19
    vectors = cell.pairing_null(3, n_tests * (m + 1), rng)  # observed and null: random 3-latent pairings alike
    agreement = steerer.effects(vectors, 2.0, reference=reference).agreement.reshape(n_tests, m + 1)
    p = np.array([permutation_p(row[0], row[1:]) for row in agreement])
    for k in (2, 5, 10):
        assert binomtest(int(np.sum(p <= k / (m + 1))), n_tests, k / (m + 1)).pvalue > 0.001


def test_permutation_p_counts_ties_and_never_returns_zero():
    assert permutation_p(1.0, np.array([0.0, 1.0, 2.0])) == pytest.approx(3 / 4)
    assert permutation_p(5.0, np.zeros(199)) == pytest.approx(1 / 200)
    assert np.isnan(permutation_p(np.nan, np.zeros(3)))


def test_dominance_test_brute_force_and_planted_diagonal():
    from itertools import permutations

    rng = np.random.default_rng(12)
    matrix = rng.standard_normal((4, 4))
    observed = diagonal_dominance(matrix)
    exact = np.mean([diagonal_dominance(matrix[:, list(order)]) >= observed - 1e-12
                     for order in permutations(range(4))])
    test = dominance_test(matrix, permutations=100, seed=0)  # 4! = 24 <= 100: enumerated
    assert test.exact and test.n_permutations == 24
    assert test.statistic == pytest.approx(matrix.trace() / 4 - (matrix.sum() - matrix.trace()) / 12)
    assert test.p_value == pytest.approx(exact, abs=1e-12)
    sampled = dominance_test(matrix, permutations=20, seed=0)
    assert not sampled.exact and sampled.p_value >= 1 / 21
    planted = rng.normal(0, 0.1, (8, 8)) + np.eye(8)
    assert dominance_test(planted, permutations=2000, seed=0).p_value == pytest.approx(1 / 2001)


def test_summary_holm_is_per_method_over_concepts_and_cells_and_self_p_counts_each_layer_once():
    from featsim.steering_stage import summary_table

    def row(concept, la, lb, method, transfer_p, self_p):
        return {"concept": concept, "layer_a": la, "layer_b": lb, "method": method, "alpha": 0.5,
                "self_p": self_p, "transfer_p": transfer_p, "status": "tested"}

    rows = [row("x", 0, 0, "pairing", 0.01, 0.02), row("x", 0, 1, "pairing", 0.04, 0.02),
            row("y", 0, 0, "pairing", np.nan, 0.03), row("x", 0, 0, "procrustes", 0.01, 0.02)]
    table = summary_table(rows, null_draws=99).set_index(["concept", "layer_b", "method"])
    # pairing family: {0.01, 0.04} -> Holm {0.02, 0.04}; procrustes alone: unchanged; the NaN row is left out
    assert table.loc[("x", 0, "pairing"), "transfer_p_holm"] == pytest.approx(0.02)
    assert table.loc[("x", 1, "pairing"), "transfer_p_holm"] == pytest.approx(0.04)
    assert table.loc[("x", 0, "procrustes"), "transfer_p_holm"] == pytest.approx(0.01)
    assert np.isnan(table.loc[("y", 0, "pairing"), "transfer_p_holm"])
    assert table.loc[("x", 0, "pairing"), "transfer_p_holm_min"] == pytest.approx(2 / 100)
    assert (table["status"] == "tested").all()  # floor 2/100 < 0.05
    few_draws = summary_table(rows, null_draws=19).set_index(["concept", "layer_b", "method"])
    # floors: pairing 2/20 = 0.1, procrustes 1/20 = 0.05, both >= alpha 0.05: cannot be significant after Holm
    assert (few_draws["status"] == "underpowered").all()
    # self p: (x, L0) and (y, L0) are two tests, however many rows repeat them -> Holm {0.04, 0.04}
    assert table["self_p_holm"].to_numpy() == pytest.approx([0.04, 0.04, 0.04, 0.04])
