"""Steering (featsim.steering, featsim.steering_transfer): hooks, effects, transfer and nulls on tiny models."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from featsim.errors import ConfigError
from featsim.steering import (WHITENING_RIDGE, Steerer, Whitener, agreement_matrix, heldout_prompts,
                              keyword_token_ids, steering_hook)
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


def test_chunks_of_different_sizes_reuse_the_tiled_cache_correctly():
    """Chunks of 2, 2, 1 vectors (then 3, tiling again): views of one tiled prefix cache, same numbers."""
    model = tiny_model()
    tokens = prompts()
    steerer = Steerer(model, "blocks.0.hook_resid_post", tokens, batch_size=2 * tokens.shape[0])
    assert steerer._fast
    vectors = np.random.default_rng(22).standard_normal((5, 16)).astype(np.float32)
    chunked = steerer.effects(vectors, 1.5, keep_signatures=True).signatures
    wider = steerer.steered_logprobs(torch.as_tensor(vectors[:3]), 1.5).numpy()
    mask = steered_positions(tokens.shape[1], "last")
    clean = manual_last_logprobs(model, tokens, "blocks.0.hook_resid_post", np.zeros(16), 0.0, mask)
    for i, vector in enumerate(vectors):
        expected = manual_last_logprobs(model, tokens, "blocks.0.hook_resid_post", vector, 1.5, mask)
        np.testing.assert_allclose(chunked[i], expected - clean, atol=5e-5)
        if i < 3:
            np.testing.assert_allclose(wider[i], expected, atol=2e-5)


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
    whitener = Whitener(steerer.effects(random_directions(24, 16, np.random.default_rng(8)), 3.0,
                                        keep_signatures=True).signatures)
    transferred = steerer.effects(vector_b[None], 3.0, reference=self_effect.signatures[0],
                                  whitening=(whitener, whitener))
    assert transferred.agreement[0] == pytest.approx(1.0, abs=1e-6)
    assert transferred.specific_agreement[0] == pytest.approx(1.0, abs=1e-5)


def numpy_whitened(random_signatures: np.ndarray, signatures: np.ndarray, ridge: float) -> np.ndarray:
    """Oracle: per prompt, (C + ridge * max eig(C) I)^(-1/2) applied to the vocabulary-centred signature, C the
    second moment of the vocabulary-centred random signatures (numpy eigh)."""
    def centred(x):
        return x - x.mean(axis=-1, keepdims=True)

    out = np.empty(signatures.shape)
    for p in range(signatures.shape[1]):
        x = centred(random_signatures[:, p].astype(np.float64))
        eigen, vectors = np.linalg.eigh(x.T @ x / len(x))
        eigen = np.clip(eigen, 0, None)
        root = (vectors / np.sqrt(eigen + ridge * eigen.max())) @ vectors.T
        out[:, p] = centred(signatures[:, p].astype(np.float64)) @ root
    return out


@pytest.mark.parametrize("n_random", [5, 40])  # fewer and more random directions than vocabulary entries
def test_whitener_matches_numpy_eigh(n_random):
    rng = np.random.default_rng(21)
    scales = np.geomspace(10, 0.01, 23)  # a few dominant vocabulary directions, like real effect signatures
    random_signatures = rng.standard_normal((n_random, 3, 23)) * scales + 0.5
    signatures = rng.standard_normal((4, 3, 23))
    whitened = Whitener(random_signatures, ridge=0.01)(torch.as_tensor(signatures, dtype=torch.float32)).numpy()
    expected = numpy_whitened(random_signatures, signatures, 0.01)
    np.testing.assert_allclose(whitened, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_specific_agreement_is_the_correlation_of_whitened_signatures():
    model_a, model_b = tiny_model(seed=5), tiny_model(seed=6)
    tokens = prompts(n=4)
    steer_a = Steerer(model_a, "blocks.0.hook_resid_post", tokens)
    steer_b = Steerer(model_b, "blocks.1.hook_resid_post", tokens)
    rng = np.random.default_rng(12)
    random_a = steer_a.effects(random_directions(30, 16, rng), 2.0, keep_signatures=True).signatures
    random_b = steer_b.effects(random_directions(30, 16, rng), 2.0, keep_signatures=True).signatures
    references = steer_a.effects(random_directions(2, 16, rng), 2.0, keep_signatures=True).signatures
    vectors = random_directions(3, 16, rng)
    effects = steer_b.effects(vectors, 2.0, reference=references, keep_signatures=True,
                              whitening=(Whitener(random_b), Whitener(random_a)))
    rows = numpy_whitened(random_b, effects.signatures, WHITENING_RIDGE)
    cols = numpy_whitened(random_a, references, WHITENING_RIDGE)
    for i in range(3):
        for r in range(2):
            expected = np.mean([np.corrcoef(rows[i, p], cols[r, p])[0, 1] for p in range(4)])
            assert effects.specific_agreement[i, r] == pytest.approx(expected, abs=1e-4)
    single = steer_b.effects(vectors, 2.0, reference=references[1], whitening=(Whitener(random_b),
                                                                                Whitener(random_a)))
    np.testing.assert_allclose(single.specific_agreement, effects.specific_agreement[:, 1], atol=1e-6)


def test_specific_transfer_p_values_are_uniform_under_random_pairings():
    """Whitened on each side by independent random directions, the specific agreement is a fixed function of
    each B signature: with observed pairings drawn like the null, P(p <= k/(m+1)) = k/(m+1)."""
    from scipy.stats import binomtest

    model_a, model_b = tiny_model(seed=7), tiny_model(seed=4)
    tokens = prompts(n=4, length=6)
    steer_a = Steerer(model_a, "blocks.1.hook_resid_post", tokens)
    steer_b = Steerer(model_b, "blocks.0.hook_resid_post", tokens)
    rng = np.random.default_rng(13)
    whitening = (Whitener(steer_b.effects(random_directions(32, 16, rng), 2.0, keep_signatures=True).signatures),
                 Whitener(steer_a.effects(random_directions(32, 16, rng), 2.0, keep_signatures=True).signatures))
    cell = TransferCell(np.eye(16), rng.standard_normal((60, 16)), np.arange(60), np.arange(60))
    n_tests, m = 150, 19
    references = steer_a.effects(random_directions(n_tests, 16, rng), 2.0, keep_signatures=True).signatures
    vectors = cell.pairing_null(3, n_tests * (m + 1), rng)  # observed and null: random 3-latent pairings alike
    specific = steer_b.effects(vectors, 2.0, reference=references, whitening=whitening).specific_agreement
    per_test = specific.reshape(n_tests, m + 1, n_tests)[np.arange(n_tests), :, np.arange(n_tests)]
    p = np.array([permutation_p(row[0], row[1:]) for row in per_test])
    assert p.min() >= 1 / (m + 1)
    for k in (2, 5, 10):
        assert binomtest(int(np.sum(p <= k / (m + 1))), n_tests, k / (m + 1)).pvalue > 0.001


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
    # the same vector steered in another batch: float32 rounding below the observed value is still a tie
    observed = 0.7391256
    assert permutation_p(observed, np.array([np.float32(observed) - 3e-7, 0.1, 0.2])) == pytest.approx(2 / 4)
    assert permutation_p(observed, np.array([observed - 1e-3, 0.1, 0.2])) == pytest.approx(1 / 4)


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
                "self_p": self_p, "transfer_p": transfer_p, "status": "tested",
                "transfer_p_specific": transfer_p / 2}

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
    # the specific agreement's p: its own Holm family, same grouping ({0.005, 0.02} -> {0.01, 0.02})
    assert table.loc[("x", 0, "pairing"), "transfer_p_specific_holm"] == pytest.approx(0.01)
    assert table.loc[("x", 1, "pairing"), "transfer_p_specific_holm"] == pytest.approx(0.02)
    assert table.loc[("x", 0, "procrustes"), "transfer_p_specific_holm"] == pytest.approx(0.005)
    few_draws = summary_table(rows, null_draws=19).set_index(["concept", "layer_b", "method"])
    # floors: pairing 2/20 = 0.1, procrustes 1/20 = 0.05, both >= alpha 0.05: cannot be significant after Holm
    assert (few_draws["status"] == "underpowered").all()
    # self p: (x, L0) and (y, L0) are two tests, however many rows repeat them -> Holm {0.04, 0.04}
    assert table["self_p_holm"].to_numpy() == pytest.approx([0.04, 0.04, 0.04, 0.04])


# ---------------------------------------------------------------- concept latents, shared nulls, significance


def test_concept_latents_are_the_labelled_latents_of_each_concept(tmp_path):
    from featsim.steering_transfer import concept_latents

    table = pd.DataFrame({"latent": [5, 2, 9, 7, 3, 1],
                          "concept": ["animal", "animal", None, "color", "animal", None],
                          "status": ["labelled", "labelled", "no_match", "labelled", "labelled", "tie"]})
    table.loc[4, "status"] = "too_few_keywords"  # a candidate concept without a label does not count
    table.loc[4, "concept"] = None
    table.to_parquet(tmp_path / "L0.parquet")
    latents = concept_latents(tmp_path / "L0.parquet", ["animal", "color", "food"])
    assert latents["animal"].tolist() == [2, 5] and latents["color"].tolist() == [7]
    assert latents["food"].size == 0


def test_agreement_with_several_references_matches_numpy():
    model = tiny_model()
    tokens = prompts()
    steerer = Steerer(model, "blocks.0.hook_resid_post", tokens)
    vectors = np.random.default_rng(13).standard_normal((3, 16))
    references = np.random.default_rng(14).standard_normal((4, 5, 23))
    effects = steerer.effects(vectors, 2.0, reference=references, keep_signatures=True)
    assert effects.agreement.shape == (3, 4)
    for i in range(3):
        for r in range(4):
            expected = np.mean([np.corrcoef(effects.signatures[i, p], references[r, p])[0, 1] for p in range(5)])
            assert effects.agreement[i, r] == pytest.approx(expected, abs=1e-5)


def test_shared_pairing_null_gives_each_concept_the_null_of_its_own_reference():
    from featsim.steering_stage import _Layer, _SharedPairingNull

    model = tiny_model(seed=5)
    steerer = Steerer(model, "blocks.0.hook_resid_post", prompts(n=4, length=6))
    rng = np.random.default_rng(15)
    cell = TransferCell(np.eye(16), rng.standard_normal((30, 16)), np.arange(30), np.arange(30))
    references = steerer.effects(random_directions(3, 16, rng), 2.0, keep_signatures=True).signatures
    whitener = Whitener(steerer.effects(random_directions(20, 16, rng), 2.0, keep_signatures=True).signatures)
    shared = _SharedPairingNull(cell, _Layer(steerer, "blocks.0.hook_resid_post"), 2.0, references,
                                SteeringConfig(null_draws=25), (0, 0), responses=False,
                                whitening=(whitener, whitener))
    null = shared(3)
    assert shared(3) is null  # one batch per partner count
    # oracle: the same seeded draws steered again, each compared with one reference alone
    from featsim.steering_stage import _seed

    vectors = cell.pairing_null(3, 25, np.random.default_rng(_seed(0, "pairing-null", 0, 0, 3)))
    for row in range(3):
        alone = steerer.effects(vectors, 2.0, reference=references[row], whitening=(whitener, whitener))
        np.testing.assert_allclose(null.agreement[:, row], alone.agreement, atol=1e-6)
        np.testing.assert_allclose(null.specific_agreement[:, row], alone.specific_agreement, atol=1e-6)
    assert not np.allclose(shared(2).agreement, null.agreement[:, :])  # another size, other draws


def test_holm_floor_uses_the_configured_alpha():
    from featsim.steering_stage import summary_table

    rows = [{"concept": c, "layer_a": 0, "layer_b": 0, "method": "pairing", "alpha": 0.5, "self_p": 0.01,
             "transfer_p": 0.01, "status": "tested"} for c in ("x", "y", "z")]
    # floor 3 / 41 = 0.073: underpowered at 0.05, testable at 0.1
    assert (summary_table(rows, null_draws=40, alpha=0.05)["status"] == "underpowered").all()
    assert (summary_table(rows, null_draws=40, alpha=0.1)["status"] == "tested").all()


# ---------------------------------------------------------------- downstream feature effects

from featsim.steering_downstream import (LaterLayers, downstream_effect, paired_overlap,  # noqa: E402
                                         top_responders)


def linear_encoder(weights: torch.Tensor):
    """An SAE-like encoder with known arithmetic: ReLU(x W)."""
    return lambda x: torch.relu(x @ weights)


def manual_responses(model, tokens, hook: str, later: str, vector, alpha: float, mask, weights) -> np.ndarray:
    """Oracle: full forward passes with and without alpha * v added at `hook` (a plain hook, no cache),
    `later` captured at the last position and encoded; mean over prompts of |delta code|."""
    tokens = torch.as_tensor(tokens)
    mask = torch.as_tensor(mask)
    seen = {}

    def add(act, hook):
        act = act.clone()
        act[:, mask] += alpha * torch.as_tensor(vector, dtype=act.dtype)
        return act

    def keep(name):
        return lambda act, hook: seen.__setitem__(name, act[:, -1].clone())

    with torch.no_grad():
        with model.hooks(fwd_hooks=[(later, keep("clean"))]):
            model(tokens)
        with model.hooks(fwd_hooks=[(hook, add), (later, keep("steered"))]):
            model(tokens)
    encode = linear_encoder(weights)
    return (encode(seen["steered"]) - encode(seen["clean"])).abs().mean(dim=0).numpy()


@pytest.mark.parametrize("positions,fast", [("last", True), ("last", False), (3, False)])
def test_readout_responses_match_a_manual_forward(positions, fast):
    model = tiny_model()
    tokens = prompts()
    weights = torch.as_tensor(np.random.default_rng(16).standard_normal((16, 40)), dtype=torch.float32)
    later = "blocks.1.hook_resid_post"
    steerer = Steerer(model, "blocks.0.hook_resid_post", tokens, positions=positions, fast=fast,
                      readouts={later: linear_encoder(weights)})
    assert steerer._fast == fast
    vectors = np.random.default_rng(17).standard_normal((3, 16)).astype(np.float32)
    effects = steerer.effects(vectors, 2.5, responses=True)
    mask = steered_positions(tokens.shape[1], positions)
    for i, vector in enumerate(vectors):
        expected = manual_responses(model, tokens, "blocks.0.hook_resid_post", later, vector, 2.5, mask, weights)
        np.testing.assert_allclose(effects.responses[later][i], expected, atol=5e-5)
    zero = steerer.effects(np.zeros((1, 16)), 2.5, responses=True)
    assert np.all(zero.responses[later] == 0)


def test_readout_hooks_must_come_after_the_steered_block():
    model = tiny_model()
    with pytest.raises(ValueError, match="blocks.0.hook_resid_post"):
        Steerer(model, "blocks.1.hook_resid_pre", prompts(), readouts={"blocks.0.hook_resid_post": lambda x: x})
    with pytest.raises(ValueError, match="readout"):
        Steerer(model, "blocks.0.hook_resid_post", prompts()).effects(np.zeros((1, 16)), 1.0, responses=True)


def test_top_responders_brute_force_with_ties_and_silent_latents():
    response = np.array([0.0, 0.5, 0.2, 0.5, 0.0, 0.9, 0.2])
    assert top_responders(response, 3).tolist() == [5, 1, 3]  # tie 0.5: lower id first
    assert top_responders(response, 10).tolist() == [5, 1, 3, 2, 6]  # latents that did not move never respond
    rng = np.random.default_rng(18)
    for _ in range(20):
        values = rng.integers(0, 4, 12).astype(float)
        expected = sorted((i for i in range(12) if values[i] > 0), key=lambda i: (-values[i], i))[:5]
        assert top_responders(values, 5).tolist() == expected


def test_paired_overlap_counts_pairs_joining_both_responder_sets():
    pairs_a, pairs_b = np.array([0, 1, 2, 3, 4]), np.array([10, 11, 12, 13, 14])
    rng = np.random.default_rng(19)
    for _ in range(20):
        ra, rb = rng.choice(6, 3, replace=False), rng.choice(np.arange(9, 16), 3, replace=False)
        expected = sum(1 for a, b in zip(pairs_a, pairs_b) if a in ra and b in rb)
        assert paired_overlap(ra, rb, pairs_a, pairs_b) == expected


def later_cell(pairs_a, pairs_b, d_a: int, d_b: int) -> LaterLayers:
    return LaterLayers(1, 1, "blocks.1.hook_resid_post", "blocks.1.hook_resid_post", np.asarray(pairs_a),
                       np.asarray(pairs_b), pd.Series({0: "animal"}, dtype=object),
                       pd.Series({int(pairs_b[0]): "animal"}, dtype=object))


def test_downstream_overlap_detects_planted_paired_responders_and_labels_them():
    rng = np.random.default_rng(20)
    d, n, m = 60, 5, 99
    pairs_a = rng.permutation(d)[:40]
    pairs_b = rng.permutation(d)[:40]
    later = later_cell(pairs_a, pairs_b, d, d)
    response_a, response_b = np.zeros(d), np.zeros(d)
    response_a[pairs_a[:n]] = np.arange(n, 0, -1)  # A's responders are the A sides of 5 pairs ...
    response_b[pairs_b[:n]] = np.arange(n, 0, -1)  # ... and B's the B sides of the same pairs
    null = rng.random((m, d))  # null transfers move unrelated latents
    result = downstream_effect(later, response_a, response_b, null, n)
    assert result["overlap"] == n
    brute = [sum(1 for a, b in zip(pairs_a, pairs_b) if a in pairs_a[:n] and b in np.argsort(-row)[:n])
             for row in null]
    assert result["overlap_p"] == pytest.approx((np.sum(np.array(brute) >= n) + 1) / (m + 1))
    assert result["top_a"][0] == {"latent": int(pairs_a[0]), "mean_abs_delta": float(n),
                                  "concept": "animal" if pairs_a[0] == 0 else None, "paired_with": int(pairs_b[0])}
    assert result["top_b"][0]["concept"] == "animal" and result["top_b"][0]["paired_with"] == int(pairs_a[0])


def test_downstream_overlap_p_values_are_valid_when_b_responds_like_the_null():
    """Observed B responses drawn like the null draws: P(p <= k/(m+1)) <= k/(m+1) (ties make it conservative)."""
    from scipy.stats import binomtest

    rng = np.random.default_rng(21)
    d, n, m, n_tests = 50, 6, 19, 300
    pairs = rng.permutation(d)[:30], rng.permutation(d)[:30]
    later = later_cell(*pairs, d, d)
    p = []
    for _ in range(n_tests):
        draws = rng.random((m + 1, d)) ** 3
        p.append(downstream_effect(later, rng.random(d), draws[0], draws[1:], n)["overlap_p"])
    p = np.array(p)
    for k in (2, 5, 10):
        hits = int(np.sum(p <= k / (m + 1)))
        assert hits <= n_tests * k / (m + 1) or binomtest(hits, n_tests, k / (m + 1)).pvalue > 0.001


def test_downstream_table_holm_per_method_and_floor():
    from featsim.steering_stage import downstream_table

    def row(concept, method, p):
        return {"concept": concept, "layer_a": 0, "layer_b": 0, "method": method, "alpha": 0.5, "later_layer_a": 1,
                "later_layer_b": 1, "n_responders": 10, "overlap": 2, "overlap_p": p, "status": "tested"}

    table = downstream_table([row("x", "pairing", 0.01), row("y", "pairing", 0.02), row("x", "procrustes", 0.3)],
                             null_draws=199).set_index(["concept", "method"])
    assert table.loc[("x", "pairing"), "overlap_p_holm"] == pytest.approx(0.02)
    assert table.loc[("y", "pairing"), "overlap_p_holm"] == pytest.approx(0.02)
    assert table.loc[("x", "procrustes"), "overlap_p_holm"] == pytest.approx(0.3)
    assert table.loc[("x", "pairing"), "overlap_p_holm_min"] == pytest.approx(2 / 200)
    assert (table["status"] == "tested").all()
    assert downstream_table([], null_draws=10).empty


def test_cells_after_are_strictly_later_on_both_sides():
    from featsim.steering_stage import LaterCell, cells_after

    later = [LaterCell(la, lb, "", "", "", "", "") for la, lb in [(0, 1), (1, 1), (2, 0), (2, 3)]]
    assert [(c.layer_a, c.layer_b) for c in cells_after(0, 0, later)] == [(1, 1), (2, 3)]
    assert cells_after(2, 3, later) == ()


def test_downstream_figure_draws_cells_and_says_when_there_is_none():
    from featsim.steering_figures import downstream_figure
    from featsim.steering_stage import downstream_table

    empty = downstream_figure(downstream_table([], null_draws=10), "main")
    assert "no later cell" in empty.axes[0].get_title()
    rows = [{"concept": c, "layer_a": 0, "layer_b": 0, "method": m, "alpha": 0.5, "later_layer_a": 1,
             "later_layer_b": 1, "n_responders": 10, "overlap": 2, "overlap_null_mean": 0.3, "overlap_null_q95": 1.0,
             "overlap_p": 0.01, "status": "tested", "top_a": "", "top_b": ""}
            for c in ("animal", "color") for m in ("pairing", "procrustes")]
    figure = downstream_figure(downstream_table(rows, null_draws=99), "main")
    assert "A L1 / B L1" in figure.axes[0].get_title()
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["animal", "color"]


# ---------------------------------------------------------------- the target: stamping and routing the records

from featsim.layout import PROVENANCE, sibling  # noqa: E402
from featsim.provenance import config_hash  # noqa: E402
from featsim.steering_stage import (SPECIFICITY_COLUMNS, SteeringDocument, SteeringResult, SteeringSide,  # noqa: E402
                                    downstream_table, summary_table)
from featsim.targets import steering as steering_target  # noqa: E402


def test_run_steering_writes_each_record_where_the_rule_declared_it_with_provenance(tmp_path, monkeypatch):
    """The stage returns records; the target puts each at its declared path with the config's hash, the ids,
    the cell and the prompts' shape, and draws the matrix figure from the cells' agreement records."""
    import json

    from matplotlib.figure import Figure

    records = {(1, 1, "animal"): {"concept": "animal", "x": 1}, (1, 1, "color"): {"concept": "color", "x": 2},
               (1, 1, None): {"layer_a": 1, "layer_b": 1, "matrices": [], "concepts": ["animal", "color"]},
               (2, 1, "animal"): {"concept": "animal", "x": 3},
               (2, 1, None): {"layer_a": 2, "layer_b": 1, "matrices": [], "concepts": ["animal"]}}
    result = SteeringResult(summary_table([], 50), pd.DataFrame(columns=list(SPECIFICITY_COLUMNS)),
                            downstream_table([], 50),
                            [SteeringDocument(la, lb, c, record) for (la, lb, c), record in records.items()], (8, 12))
    monkeypatch.setattr(steering_target, "steer_comparison", lambda *args, **kwargs: result)
    drawn = {}

    def matrix_figure(agreements, *args):
        drawn["agreements"] = agreements
        return Figure()

    monkeypatch.setattr(steering_target, "effects_figure", lambda *args: Figure())
    monkeypatch.setattr(steering_target, "downstream_figure", lambda *args: Figure())
    monkeypatch.setattr(steering_target, "matrix_figure", matrix_figure)
    concept_jsons = {(1, 1): {"animal": str(tmp_path / "a11.json"), "color": str(tmp_path / "c11.json")},
                     (2, 1): {"animal": str(tmp_path / "a21.json")}}
    agreement_jsons = {(1, 1): str(tmp_path / "m11.json"), (2, 1): str(tmp_path / "m21.json")}
    outputs = steering_target.SteeringOutputs(concept_jsons, agreement_jsons, *(str(tmp_path / f"{name}") for name in (
        "summary.csv", "specificity.csv", "downstream.csv", "effects.png", "matrix.png", "downstream.png")))
    steering_config = {"prompts": 8, "alphas": [0.5, 1.0]}
    side = SteeringSide(model="A", lm_owner="A", lm={"source": "toy"}, sae={"source": "toy"}, dtype="float32")
    steering_target.run_steering([], {}, side, side, "tokens.zarr", {"heldout_fraction": 0.2, "seed": 0},
                                 steering_config, tmp_path, {"experiment": "e", "comparison": "main"}, outputs,
                                 significance=0.05)
    paths = {**{(la, lb, c): p for (la, lb), m in concept_jsons.items() for c, p in m.items()},
             **{(la, lb, None): p for (la, lb), p in agreement_jsons.items()}}
    for key, record in records.items():
        written = json.loads(open(paths[key]).read())
        provenance = written.pop("provenance")
        assert written == record
        assert (provenance["layer_a"], provenance["layer_b"]) == key[:2] and provenance["experiment"] == "e"
        assert provenance["config_hash"] == config_hash(steering_config) and provenance["prompts"] == 8
        assert provenance["prompt_length"] == 12 and provenance["kind"] == "steering"
    assert [agreement["layer_a"] for agreement in drawn["agreements"]] == [1, 2]
    for name, kind in (("summary.csv", "steering_summary"), ("downstream.csv", "steering_downstream")):
        assert json.loads(sibling(tmp_path / name, PROVENANCE).read_text())["kind"] == kind
