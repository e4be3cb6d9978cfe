"""Per-latent labels: streamed top-k against a brute-force sort, masking, word rebuilding, contexts."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from featsim.labels import LABEL_COLUMNS, LabelsConfig, label_latents, latent_stats, position_text, word_rules
from featsim.parquet import read_parquet_provenance
from featsim.stores import open_codes, open_tokens, write_codes, write_tokens
from featsim.targets.labels import write_labels
from featsim.tokens import vocab_hash
from featsim.toy.tokenizer import build_word_tokenizer

WORDS = ["the", "big", "cat", "sat", "on", "a", "mat", "dog", "ran", "."]


def brute_top_k(dense: np.ndarray, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per column: rows of the k largest positive values, ties to the earlier row (stable sort)."""
    rows, values = [], []
    for column in dense.T:
        firing = np.flatnonzero(column > 0)
        order = firing[np.argsort(-column[firing], kind="stable")][:k]
        rows.append(order)
        values.append(column[order])
    return rows, values


def random_codes(n_tokens: int, n_latents: int, seed: int) -> np.ndarray:
    """Sparse-ish codes with many ties (values on a 0.25 grid) and some negative entries."""
    rng = np.random.default_rng(seed)
    dense = np.round(rng.exponential(1.0, (n_tokens, n_latents)) * 4) / 4
    dense[rng.random((n_tokens, n_latents)) > 0.25] = 0.0
    dense[rng.random((n_tokens, n_latents)) > 0.97] = -0.5
    dense[:, 0] = 0.0  # a dead latent
    dense[3, 1] = 2.0  # a latent firing exactly once
    dense[:, 1] = np.where(np.arange(n_tokens) == 3, 2.0, 0.0)
    return dense.astype(np.float32)


@pytest.mark.parametrize("rows_per_chunk, k", [(7, 6), (64, 1), (1000, 6), (33, 90)])
def test_streamed_top_k_and_stats_match_brute_force(rows_per_chunk, k):
    dense = random_codes(300, 40, seed=1)
    stats = latent_stats(sp.csr_matrix(dense), k, rows_per_chunk=rows_per_chunk, progress=False)
    expected_rows, expected_values = brute_top_k(dense, k)
    for latent in range(dense.shape[1]):
        held = stats.top_rows[latent] >= 0
        np.testing.assert_array_equal(stats.top_rows[latent][held], expected_rows[latent])
        np.testing.assert_array_equal(stats.top_values[latent][held], expected_values[latent])
    firing = dense > 0
    np.testing.assert_array_equal(stats.n_active, firing.sum(axis=0))
    np.testing.assert_allclose(stats.mean_act, dense.mean(axis=0))
    with np.errstate(invalid="ignore"):
        expected_active_mean = np.where(firing, dense, 0).sum(axis=0) / firing.sum(axis=0)
    np.testing.assert_allclose(stats.mean_act_active, expected_active_mean)  # NaN where a latent never fires
    np.testing.assert_allclose(stats.max_act, dense.max(axis=0))
    assert stats.n_active[0] == 0 and np.isnan(stats.mean_act_active[0]) and (stats.top_rows[0] == -1).all()
    assert list(stats.top_rows[1][stats.top_rows[1] >= 0]) == [3]


def test_top_k_breaks_ties_by_the_earlier_row_across_chunks():
    dense = np.zeros((50, 3), dtype=np.float32)
    dense[:, 0] = 1.0  # all tied: the first k rows
    dense[1::2, 1] = 0.5
    dense[::7, 1] = 2.0  # a tie group (rows 0, 7, 14, ...) above many ties below
    dense[::-1, 2] = np.repeat(np.arange(1, 11, dtype=np.float32), 5)  # ties within and across chunks
    stats = latent_stats(sp.csr_matrix(dense), 4, rows_per_chunk=3, progress=False)
    assert stats.top_rows[0].tolist() == [0, 1, 2, 3]
    assert stats.top_rows[1].tolist() == [0, 7, 14, 21]
    assert stats.top_rows[2].tolist() == [0, 1, 2, 3]
    expected_rows, _ = brute_top_k(dense, 4)
    np.testing.assert_array_equal(stats.top_rows, np.stack(expected_rows))


def test_top_k_of_a_store_with_skewed_firing_matches_brute_force(tmp_path):
    """TopK-like codes (a few latents fire on most tokens, the rest rarely; float16 values with many
    exact ties) read from a code store in chunks: the same rows as a stable descending sort per latent."""
    rng = np.random.default_rng(7)
    n_tokens, d_sae, l0 = 2000, 64, 8
    weights = 1.0 / np.arange(1, d_sae + 1) ** 1.2
    dense = np.zeros((n_tokens, d_sae), dtype=np.float32)
    for row in range(n_tokens):
        dense[row, rng.choice(d_sae, l0, replace=False, p=weights / weights.sum())] = rng.exponential(1.0, l0)
    dense = dense.astype(np.float16).astype(np.float32)
    write_codes(tmp_path / "codes.zarr", dense, {}, value_dtype="float16")
    stats = latent_stats(open_codes(tmp_path / "codes.zarr"), 10, rows_per_chunk=97, progress=False)
    expected_rows, expected_values = brute_top_k(dense, 10)
    for latent in range(d_sae):
        held = stats.top_rows[latent] >= 0
        np.testing.assert_array_equal(stats.top_rows[latent][held], expected_rows[latent])
        np.testing.assert_array_equal(stats.top_values[latent][held], expected_values[latent])
    np.testing.assert_allclose(stats.mean_act, dense.astype(np.float64).mean(axis=0), rtol=1e-12)


@pytest.fixture
def word_tokenizer():
    return build_word_tokenizer(WORDS)


def make_token_store(tmp_path, tokenizer, rng, vocab_hash_override=None):
    """3 sequences of 12 tokens: <bos> first, trailing padding in one, a masked middle token in another."""
    pad, bos = tokenizer.pad_token_id, tokenizer.bos_token_id
    word_ids = tokenizer.convert_tokens_to_ids(WORDS)
    tokens = rng.choice(word_ids, size=(3, 12)).astype(np.int32)
    tokens[:, 0] = bos
    tokens[1, 9:] = pad
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, 0] = False
    mask[1, 9:] = False
    mask[2, 5] = False  # a listed special token in the middle of a sequence
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    attrs = {"tokenizer": str(tmp_path / "tokenizer"), "vocab_hash": vocab_hash_override or vocab_hash(tokenizer)}
    write_tokens(tmp_path / "tokens.zarr", tokens, mask, attrs)
    return open_tokens(tmp_path / "tokens.zarr")


def test_labels_from_stores_use_unmasked_positions_only(tmp_path, word_tokenizer):
    rng = np.random.default_rng(0)
    tokens = make_token_store(tmp_path, word_tokenizer, rng)
    positions = tokens.unmasked_positions()
    dense = random_codes(len(positions), 12, seed=2)
    write_codes(tmp_path / "codes.zarr", dense, {"config_hash": "x"})
    table = label_latents(open_codes(tmp_path / "codes.zarr"), tokens, word_tokenizer,
                          LabelsConfig(top_k=5, context_window=2), progress=False)
    assert list(table.columns) == list(LABEL_COLUMNS)
    assert table["latent"].tolist() == list(range(12))
    flat_tokens = tokens.tokens[...].reshape(-1)
    flat_mask = tokens.mask[...].reshape(-1)
    expected_rows, expected_values = brute_top_k(dense, 5)
    for latent, row in table.iterrows():
        top_positions = np.asarray(row["top_positions"], dtype=np.int64)
        np.testing.assert_array_equal(top_positions, positions[expected_rows[latent]])
        np.testing.assert_allclose(row["top_values"], expected_values[latent])
        assert flat_mask[top_positions].all()
        np.testing.assert_array_equal(row["top_token_ids"], flat_tokens[top_positions])
        assert list(row["top_tokens"]) == word_tokenizer.convert_ids_to_tokens(flat_tokens[top_positions].tolist())
        assert list(row["top_words"]) == list(row["top_tokens"])  # word-level: one token per word
        for context, token in zip(row["top_contexts"], row["top_tokens"]):
            assert f"[[{token}]]" in context
            assert "<bos>" not in context and "<pad>" not in context
    np.testing.assert_array_equal(table["n_active"], (dense > 0).sum(axis=0))


def test_contexts_stay_inside_the_unmasked_run_and_mark_the_token(word_tokenizer):
    ids = word_tokenizer.convert_tokens_to_ids
    sequence = ["<bos>", "the", "big", "cat", "sat", "on", "a", "mat", ".", "<eos>", "the", "dog"]
    flat_tokens = np.array(ids(sequence), dtype=np.int64)
    flat_mask = np.array([token not in ("<bos>", "<eos>") for token in sequence])
    tokens, words, contexts = position_text(word_tokenizer, flat_tokens, flat_mask, len(sequence),
                                            np.array([3, 1, 8, 11]), context_window=2)
    assert tokens == ["cat", "the", ".", "dog"]
    assert contexts == ["the big [[cat]] sat on ...", "[[the]] big cat ...", "... a mat [[.]]", "the [[dog]]"]


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["the man sat on the mat.", "a man and a cat", "the cat sat", "Man overboard!", "Brock went home"] * 50
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def test_bpe_words_are_rebuilt_from_neighbouring_tokens(bpe_tokenizer):
    text = " Brockman met the man.\nCats, (cat)"
    ids = bpe_tokenizer.encode(text)
    pieces = bpe_tokenizer.convert_ids_to_tokens(ids)
    assert "Brock" in pieces and pieces[pieces.index("Brock") + 1] != "Ġman"  # precondition: a split word
    flat = np.array(ids, dtype=np.int64)
    tokens, words, _ = position_text(bpe_tokenizer, flat, np.ones(len(ids), bool), len(ids),
                                     np.arange(len(ids)), context_window=3, rules=word_rules(bpe_tokenizer))
    by_piece = dict(zip(pieces, words))
    assert by_piece["Brock"] == "Brockman"
    assert by_piece["Ġman"] == "man"
    assert by_piece["Ġthe"] == "the"
    assert {words[i] for i, piece in enumerate(pieces) if piece in ("C", "at", "s")} <= {"Cats", "cat"}
    assert words[pieces.index(".")] == "."
    assert words[len(pieces) - 2] == "cat"  # "(cat)": brackets are words of their own


def test_write_labels_records_provenance_and_reads_back(tmp_path, word_tokenizer):
    rng = np.random.default_rng(3)
    tokens = make_token_store(tmp_path, word_tokenizer, rng)
    dense = random_codes(tokens.n_unmasked, 8, seed=4)
    write_codes(tmp_path / "codes.zarr", dense, {"config_hash": "abc"})
    out = tmp_path / "labels" / "L0.parquet"
    write_labels(tmp_path / "codes.zarr", tmp_path / "tokens.zarr", out, LabelsConfig(top_k=3), ids={"model": "A"})
    table = pd.read_parquet(out)
    provenance = read_parquet_provenance(out)
    assert provenance["kind"] == "labels" and provenance["model"] == "A"
    assert provenance["codes_config_hash"] == "abc"
    assert all(len(row) <= 3 for row in table["top_words"])
    assert len(table) == 8


def test_write_labels_refuses_a_tokenizer_with_another_vocabulary(tmp_path, word_tokenizer):
    tokens = make_token_store(tmp_path, word_tokenizer, np.random.default_rng(5), vocab_hash_override="0" * 16)
    write_codes(tmp_path / "codes.zarr", random_codes(tokens.n_unmasked, 4, seed=6), {})
    with pytest.raises(ValueError, match="vocab"):
        write_labels(tmp_path / "codes.zarr", tmp_path / "tokens.zarr", tmp_path / "L0.parquet", LabelsConfig())
    assert not (tmp_path / "L0.parquet").exists()


def test_labels_config_names_the_bad_key():
    with pytest.raises(Exception, match="labels.top_k"):
        LabelsConfig.from_config({"top_k": 0})
    with pytest.raises(Exception, match="labels.context"):
        LabelsConfig.from_config({"context": 3})


def _words_by_piece(tokenizer, text):
    ids = tokenizer.encode(text)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    _, words, _ = position_text(tokenizer, np.array(ids, dtype=np.int64), np.ones(len(ids), bool), len(ids),
                                np.arange(len(ids)), context_window=2, rules=word_rules(tokenizer))
    return pieces, words


def test_sentencepiece_style_words_use_the_space_marker():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()  # decodes a lone "▁the" as "the": the marker, not the text, tells
    backend.train_from_iterator(["the man sat on the mat.", "a man and a cat", "Brock went home"] * 50,
                                trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    pieces, words = _words_by_piece(tokenizer, "the Brockman met the man.")
    assert "▁Brock" in pieces and "▁man" in pieces
    assert words[pieces.index("▁Brock") + 1] == "Brockman"
    assert words[pieces.index("▁man")] == "man" and words[-1] == "."


def test_wordpiece_continuations_join_the_word():
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordPiece({"[UNK]": 0, "the": 1, "bro": 2, "##ck": 3, "##man": 4, "man": 5, ".": 6},
                                  unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    pieces, words = _words_by_piece(PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]"),
                                    "the brockman man.")
    assert pieces == ["the", "bro", "##ck", "##man", "man", "."]
    assert words == ["the", "brockman", "brockman", "brockman", "man", "."]
