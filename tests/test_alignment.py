"""Character alignment of two token stores, and exact correlation on aligned rows (issue 15).

Oracles: alignment against a brute-force walk over the documents' character offsets; correlation on aligned
row pairs against a dense numpy Pearson of the gathered rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from featsim.alignment import (RowPairs, align_candidates, build_alignment, check_aligned_share, comparison_rows,
                               open_alignment, side_candidates)
from featsim.correlate import max_correlation
from featsim.errors import ConfigError
from featsim.provenance import config_hash
from featsim.stores import open_codes, open_tokens, write_codes, write_tokens
from featsim.targets.data import make_alignment
from featsim.tokens import DataConfig, build_token_set, ends_word

WORDS = ["grandmother", "cat", "sat", "on", "the", "mat", "happily", "rabbit", "garden", "."]


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *WORDS])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")


def char_tokenizer():
    """Every character a token (spaces split off): the finest tokenization, many tokens per word."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Sequence, Split, WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    chars = sorted({c for word in WORDS for c in word})
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *chars])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Sequence([WhitespaceSplit(), Split("", "isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")


def documents(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(n)]


def data(**overrides):
    values = {"source": "local", "n_tokens": 96, "context_length": 8, "local": {"paths": ["unused"]}}
    values.update(overrides)
    return DataConfig.from_config(values)


def write_store(path, token_set):
    write_tokens(path, token_set.tokens, token_set.mask, token_set.attrs, spans=token_set.spans)
    return open_tokens(path)


def brute_force_pairs(store_a, store_b, docs, mode):
    """(row_a, row_b) of every (doc, end) both stores end an unmasked last-of-offset token at, walking positions."""
    def ends(store):
        spans = store.read_spans()
        positions = store.unmasked_positions()
        found = {}
        flat_in_doc = [p for p in range(spans["doc"].size) if spans["doc"][p] >= 0]
        for i, p in enumerate(flat_in_doc):
            following = flat_in_doc[i + 1] if i + 1 < len(flat_in_doc) else None
            key = (int(spans["doc"][p]), int(spans["char_end"][p]))
            if following is not None and (int(spans["doc"][following]), int(spans["char_end"][following])) == key:
                continue  # not the last token ending here
            if mode == "word" and not ends_word(docs[key[0]], key[1]):
                continue
            row = np.searchsorted(positions, p)
            if row < positions.size and positions[row] == p:
                found[key] = int(row)
        return found

    a, b = ends(store_a), ends(store_b)
    return sorted((a[key], b[key]) for key in set(a) & set(b))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    docs = documents()
    words = build_token_set(data(), word_tokenizer(), "words", tmp, documents=docs, spans=True)
    n_documents = int(words.spans["doc"].max()) + 1
    chars = build_token_set(data(), char_tokenizer(), "chars", tmp, documents=docs, spans=True,
                            n_documents=n_documents)
    return write_store(tmp / "words.zarr", words), write_store(tmp / "chars.zarr", chars), docs


def test_spans_give_each_token_its_characters(stores):
    store_words, store_chars, docs = stores
    for store in (store_words, store_chars):
        spans, tokens = store.read_spans(), store.tokens[:].reshape(-1)
        tokenizer = word_tokenizer() if store is store_words else char_tokenizer()
        for p in np.flatnonzero(spans["doc"] >= 0):
            text = docs[spans["doc"][p]][spans["char_start"][p]:spans["char_end"][p]]
            assert tokenizer.convert_ids_to_tokens(int(tokens[p])) == text
        outside = tokens[spans["doc"] < 0]  # BOS / separators and the last row's padding carry no document
        assert np.isin(outside, [tokenizer.bos_token_id, store.attrs["pad_token_id"]]).all()
        assert (outside == tokenizer.bos_token_id).any()


def test_a_further_store_holds_every_token_of_the_documents(stores):
    store_words, store_chars, docs = stores
    n_documents = int(store_words.read_spans()["doc"].max()) + 1
    spans = store_chars.read_spans()
    assert int(spans["doc"].max()) + 1 == n_documents
    for index in range(n_documents):  # every non-space character of each document, once
        in_doc = spans["doc"] == index
        assert "".join(docs[index][s:e] for s, e in zip(spans["char_start"][in_doc], spans["char_end"][in_doc])) \
            == docs[index].replace(" ", "")


@pytest.mark.parametrize("mode", ["token", "word"])
def test_alignment_matches_a_brute_force_walk(stores, mode):
    store_words, store_chars, docs = stores
    pairs, counts = build_alignment(store_words, store_chars, mode)
    expected = brute_force_pairs(store_words, store_chars, docs, mode)
    assert list(zip(pairs.a.tolist(), pairs.b.tolist())) == expected
    # every word end of the coarse side is a token end of the character tokenizer: all of it aligns
    assert counts["share_a"] == 1.0 and counts["aligned_share"] == 1.0
    assert counts["word_end_share_a"] == 1.0 and counts["n_pairs"] == counts["n_candidates_a"]
    if mode == "token":
        assert counts["share_b"] < 0.5  # most character tokens end inside a word
    else:
        assert counts["share_b"] == 1.0 and counts["n_candidates_b"] < counts["n_unmasked_b"] / 2


def test_masked_positions_never_align(tmp_path):
    docs = documents(10)
    masked = build_token_set(data(mask={"special_tokens": ["cat"]}), word_tokenizer(), "w", tmp_path,
                             documents=docs, spans=True)
    store_a = write_store(tmp_path / "a.zarr", masked)
    store_b = write_store(tmp_path / "b.zarr", build_token_set(data(), char_tokenizer(), "c", tmp_path,
                                                               documents=docs, spans=True,
                                                               n_documents=int(masked.spans["doc"].max()) + 1))
    pairs, _ = build_alignment(store_a, store_b, "token")
    flat_a = store_a.unmasked_positions()[pairs.a]
    cat = word_tokenizer().convert_tokens_to_ids("cat")
    assert cat not in store_a.tokens[:].reshape(-1)[flat_a] and len(pairs) > 0


def test_byte_pieces_of_one_character_align_once():
    spans = {"doc": np.array([0, 0, 0, 0]), "char_end": np.array([3, 4, 4, 6]),
             "word_end": np.array([False, False, False, True])}
    side = side_candidates(spans, np.arange(4), "token")
    assert side.rows.tolist() == [0, 2, 3]  # position 1 ends at character 4 too: only the later one counts
    other = side_candidates({"doc": np.array([0, 0]), "char_end": np.array([4, 6]),
                             "word_end": np.array([False, True])}, np.arange(2), "token")
    pairs = align_candidates(side, other)
    assert pairs.a.tolist() == [2, 3] and pairs.b.tolist() == [0, 1]


def test_alignment_store_roundtrip_and_share_floor(stores, tmp_path):
    store_words, store_chars, _ = stores
    attrs = make_alignment(store_words.path, store_chars.path, tmp_path / "al.zarr", "word", 0.9, {"experiment": "e"})
    pairs, stored = open_alignment(tmp_path / "al.zarr")
    assert len(pairs) == attrs["n_pairs"] == stored["n_pairs"] and stored["experiment"] == "e"
    assert stored["config_hash"] == config_hash({"mode": "word", "min_share": 0.9})
    assert stored["tokenizer_a"] == "words" and stored["mode"] == "word"
    with pytest.raises(ConfigError) as err:  # other documents: almost nothing aligns
        other = build_token_set(data(), char_tokenizer(), "other-chars", tmp_path, documents=documents(seed=5),
                                spans=True, n_documents=20)
        make_alignment(store_words.path, write_store(tmp_path / "other.zarr", other).path, tmp_path / "bad.zarr",
                       "word", 0.9)
    assert err.value.key == "data.align_min_share" and "words" in str(err.value) and "other-chars" in str(err.value)
    assert not (tmp_path / "bad.zarr").exists()
    with pytest.raises(ConfigError):
        check_aligned_share({"aligned_share": None, "mode": "word", "n_pairs": 0, "n_candidates_a": 0,
                             "n_candidates_b": 0}, 0.5, "x", "y")


def test_split_keeps_pairs_that_are_pairing_rows_on_both_sides(stores, tmp_path):
    from featsim.split import load_split

    store_words, store_chars, _ = stores
    make_alignment(store_words.path, store_chars.path, tmp_path / "al.zarr", "token", 0.5)
    every, _ = open_alignment(tmp_path / "al.zarr")
    split = {"heldout_fraction": 0.25, "seed": 3}
    rows = comparison_rows(store_words.path, split, store_chars.path, tmp_path / "al.zarr")
    split_a, split_b = load_split(store_words, split), load_split(store_chars, split)
    expected = [(a, b) for a, b in zip(every.a, every.b) if split_a.pair_rows[a] and split_b.pair_rows[b]]
    assert list(zip(rows.a, rows.b)) == expected and 0 < len(rows) < len(every)
    assert len(comparison_rows(store_words.path, {"heldout_fraction": 0.0, "seed": 0}, store_chars.path,
                               tmp_path / "al.zarr")) == len(every)


def random_codes(rng, n_tokens, width, density):
    codes = sp.random(n_tokens, width, density=density, random_state=rng, format="csr", dtype=np.float64)
    codes.data = np.round(codes.data * 4 + 0.25, 3)
    return codes.astype(np.float32)


def dense_pearson(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    sx, sy = np.sqrt((x * x).mean(0)), np.sqrt((y * y).mean(0))
    return (x.T @ y / x.shape[0]) / np.outer(sx, sy)


@pytest.mark.parametrize("device", ["cpu", "dense-cpu", "auto-subset"])
def test_correlation_on_aligned_rows_matches_a_dense_oracle(device, tmp_path):
    rng = np.random.default_rng(1)
    codes_a, codes_b = random_codes(rng, 300, 19, 0.2), random_codes(rng, 470, 23, 0.15)
    pairs = RowPairs(np.sort(rng.choice(300, 180, replace=False)), rng.choice(470, 180, replace=False))
    dense_a = codes_a.toarray().astype(np.float64)[pairs.a]
    dense_b = codes_b.toarray().astype(np.float64)[pairs.b]
    oracle = dense_pearson(dense_a, dense_b)
    kwargs = {"device": device, "top_k": 3, "min_active": 1}
    if device == "auto-subset":
        kwargs.update(device="auto", latents_a=np.arange(19), latents_b=np.arange(23))
    write_codes(tmp_path / "a.zarr", codes_a)
    for source_a in (codes_a, open_codes(tmp_path / "a.zarr")):  # in memory, and streamed from a code store
        result = max_correlation(source_a, codes_b, rows=pairs, **kwargs)
        np.testing.assert_allclose(result.topk_corr_for_b[:, 0], oracle.max(0), atol=1e-10)
        np.testing.assert_array_equal(result.best_a_for_b, oracle.argmax(0))
        np.testing.assert_allclose(result.topk_corr_for_a[:, 0], oracle.max(1), atol=1e-10)
        assert result.n_tokens == 180
        np.testing.assert_allclose(result.mean_a, dense_a.mean(0), atol=1e-12)


def test_aligned_rows_out_of_range_are_refused():
    rng = np.random.default_rng(2)
    codes_a, codes_b = random_codes(rng, 50, 5, 0.3), random_codes(rng, 60, 5, 0.3)
    with pytest.raises(ValueError, match="outside"):
        max_correlation(codes_a, codes_b, rows=RowPairs(np.array([0, 1]), np.array([2, 60])))
    with pytest.raises(ValueError, match="aligned rows"):
        max_correlation(codes_a, codes_b)  # different row counts without pairs


def test_verify_reads_alignment_stores_and_spans(stores, tmp_path):
    from featsim.verify import verify_store

    store_words, store_chars, _ = stores
    make_alignment(store_words.path, store_chars.path, tmp_path / "al.zarr", "word", 0.5)
    assert verify_store(tmp_path / "al.zarr").status == "ok"
    assert verify_store(store_chars.path).status == "ok"
    chunk = next(p for p in (tmp_path / "al.zarr" / "rows_b").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"\0" + chunk.read_bytes()[1:])  # flip bytes: the checksum no longer matches
    assert verify_store(tmp_path / "al.zarr").status != "ok"
