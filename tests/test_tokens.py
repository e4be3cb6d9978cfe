"""Token shards: packing, BOS/separator conventions, masks, document sources, shared-tokenizer check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featsim.errors import ConfigError
from featsim.provenance import config_hash
from featsim.targets.data import make_tokens
from featsim.tokens import DataConfig, build_token_set, check_shared_tokenizer, vocab_hash

WORDS = [f"w{i}" for i in range(30)]


def tokenizer(bos="<bos>", eos="<eos>", pad="<pad>", words=WORDS):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(t for t in (pad, "<unk>", bos, eos) if t))
    vocab = {token: i for i, token in enumerate(specials + list(words))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token=bos, eos_token=eos,
                                   pad_token=pad)


def documents(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(n)]


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def config(**overrides):
    data = {"source": "local", "n_tokens": 64, "context_length": 8, "local": {"paths": ["unused"]}}
    data.update(overrides)
    return DataConfig.from_config(data)


def test_concat_packing_with_bos_rows_matches_plain_concatenation(tmp_path):
    tok = tokenizer()  # BOS distinct from EOS: rows start with BOS, documents separated by BOS
    docs = documents()
    result = build_token_set(config(), tok, "test-tok", tmp_path, documents=docs)
    bos = tok.bos_token_id
    stream = []
    for i, doc in enumerate(docs):
        stream += ([bos] if i else []) + ids_of(tok, doc)
    expected = np.array([[bos] + stream[r * 7:(r + 1) * 7] for r in range(8)], dtype=np.int32)
    np.testing.assert_array_equal(result.tokens, expected)
    np.testing.assert_array_equal(result.mask, expected != bos)
    assert result.attrs["prepend_bos"] is True and result.attrs["separator_token_id"] == bos
    assert result.attrs["vocab_hash"] == vocab_hash(tok)


def test_pythia_convention_no_bos_rows_and_eos_separator(tmp_path):
    tok = tokenizer(bos="<|endoftext|>", eos="<|endoftext|>", pad=None)
    docs = documents()
    result = build_token_set(config(), tok, "test-tok", tmp_path, documents=docs)
    eos = tok.eos_token_id
    stream = []
    for i, doc in enumerate(docs):
        stream += ([eos] if i else []) + ids_of(tok, doc)
    np.testing.assert_array_equal(result.tokens, np.array(stream[:64], dtype=np.int32).reshape(8, 8))
    assert result.attrs["prepend_bos"] is False
    assert not result.mask[result.tokens == eos].any() and result.mask[result.tokens != eos].all()


def test_padding_is_always_dropped_and_specials_by_choice(tmp_path):
    tok = tokenizer()
    docs = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10 w11 w12", "w13"]
    cfg = config(packing="truncate", n_tokens=40, mask={"drop_bos": False, "drop_eos": False})
    result = build_token_set(cfg, tok, "t", tmp_path, documents=docs)
    # one document per row, BOS first, first 7 tokens, right-padded with EOS (the study's pad)
    assert result.tokens.shape == (3, 8)
    np.testing.assert_array_equal(result.tokens[0, :4], [tok.bos_token_id] + ids_of(tok, "w1 w2 w3"))
    np.testing.assert_array_equal(result.tokens[1], [tok.bos_token_id] + ids_of(tok, docs[1])[:7])
    np.testing.assert_array_equal(result.mask.sum(1), [4, 8, 2])  # BOS kept here, padding never
    assert (result.tokens[~result.mask] == tok.eos_token_id).all()

    specials = build_token_set(config(packing="truncate", n_tokens=40, mask={"special_tokens": ["w2", "w13"]}),
                               tok, "t", tmp_path, documents=docs)
    dropped = np.isin(specials.tokens, [tok.bos_token_id, tok.convert_tokens_to_ids("w2"), tok.convert_tokens_to_ids("w13")])
    np.testing.assert_array_equal(specials.mask, ~dropped & ~(~result.mask))
    assert specials.attrs["masked_token_ids"] == sorted({tok.bos_token_id, tok.eos_token_id,
                                                         tok.convert_tokens_to_ids("w2"), tok.convert_tokens_to_ids("w13")})

    legacy = build_token_set(DataConfig.from_config({"source": "local", "n_tokens": 40, "context_length": 8,
                                                     "packing": "truncate"}, {"keep_special_tokens": True}),
                             tok, "t", tmp_path, documents=docs)
    assert legacy.mask.all() and legacy.attrs["keep_special_tokens"] is True

    with pytest.raises(ConfigError) as err:
        build_token_set(config(mask={"special_tokens": ["<nope>"]}), tok, "t", tmp_path, documents=docs)
    assert err.value.key == "data.mask.special_tokens"


def test_running_out_of_documents_pads_the_last_row(tmp_path):
    tok = tokenizer()
    result = build_token_set(config(n_tokens=80), tok, "t", tmp_path, documents=["w1 w2 w3 w4 w5 w6 w7 w8 w9"])
    assert result.tokens.shape == (2, 8)
    np.testing.assert_array_equal(result.mask[1], [False, True, True, False, False, False, False, False])
    assert result.attrs["n_padding"] == 5


def _write_sources(tmp_path, docs):
    (tmp_path / "a.txt").write_text("\n".join(docs[:20]) + "\n\n")
    (tmp_path / "b.txt").write_text("\n".join(docs[20:]) + "\n")
    with open(tmp_path / "docs.jsonl", "w") as handle:
        for i, doc in enumerate(docs):
            handle.write(json.dumps({"id": i, "body": doc}) + "\n")
    import pandas as pd

    hf_dir = tmp_path / "hf_dataset" / "data"
    hf_dir.mkdir(parents=True)
    pd.DataFrame({"text": docs}).to_parquet(hf_dir / "train-00000-of-00001.parquet")


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")


def test_local_and_hf_sources_give_the_same_rows_and_shuffle_is_seeded(tmp_path, datasets_cache):
    tok = tokenizer()
    docs = documents(60)
    _write_sources(tmp_path, docs)
    plain = build_token_set(config(), tok, "t", tmp_path, documents=docs).tokens
    text = build_token_set(config(local={"paths": [str(tmp_path / "*.txt")]}), tok, "t", tmp_path).tokens
    jsonl = build_token_set(config(local={"paths": [str(tmp_path / "docs.jsonl")], "format": "jsonl",
                                          "text_field": "body"}), tok, "t", tmp_path).tokens
    np.testing.assert_array_equal(text, plain)
    np.testing.assert_array_equal(jsonl, plain)
    for streaming in (True, False):
        hf = build_token_set(config(source="hf", hf={"path": str(tmp_path / "hf_dataset"), "streaming": streaming}),
                             tok, "t", tmp_path).tokens
        np.testing.assert_array_equal(hf, plain)

    def shuffled(seed):
        return build_token_set(config(seed=seed, local={"paths": [str(tmp_path / "docs.jsonl")], "format": "jsonl",
                                                        "text_field": "body", "shuffle": True}), tok, "t", tmp_path).tokens

    np.testing.assert_array_equal(shuffled(3), shuffled(3))
    assert not np.array_equal(shuffled(3), shuffled(4)) and not np.array_equal(shuffled(3), plain)
    with pytest.raises(ConfigError) as err:
        build_token_set(config(local={"paths": [str(tmp_path / "docs.jsonl")], "format": "jsonl"}), tok, "t", tmp_path)
    assert err.value.key == "data.local.text_field"
    with pytest.raises(ConfigError) as err:
        build_token_set(config(local={"paths": [str(tmp_path / "nothing*.txt")]}), tok, "t", tmp_path)
    assert err.value.key == "data.local.paths"


def test_toy_route_writes_a_store_with_tokenizer_attrs(tmp_path):
    from featsim.stores import open_tokens

    exp_dir = tmp_path / "results" / "toy"
    corpus = exp_dir / "toy" / "corpus"
    tok = tokenizer()
    tok.save_pretrained(str(corpus / "tokenizer"))
    docs = documents(50)
    (corpus / "heldout.txt").write_text("\n".join(docs) + "\n")
    models = {"A": {"lm": {"source": "toy"}}, "A2": {"lm_from": "A"}}
    out = exp_dir / "tokens.zarr"
    data = {"source": "toy", "n_tokens": 64, "context_length": 8}
    make_tokens(out, data, models, {}, exp_dir, {"experiment": "toy"})
    store = open_tokens(out)
    expected = build_token_set(config(), tok, "t", tmp_path, documents=docs)
    np.testing.assert_array_equal(store.tokens[:], expected.tokens)
    np.testing.assert_array_equal(store.mask[:], expected.mask)
    assert store.attrs["tokenizer"] == str(corpus / "tokenizer") and store.attrs["vocab_hash"] == vocab_hash(tok)
    assert store.attrs["bos_token_id"] == tok.bos_token_id and store.attrs["experiment"] == "toy"
    assert store.attrs["config_hash"] == config_hash({"data": data, "models": models, "legacy": {}})


def test_models_with_different_tokenizers_stop_naming_the_model(tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    tokenizer().save_pretrained(str(same))
    tokenizer(words=WORDS[::-1]).save_pretrained(str(other))  # same tokens, other ids (one rule: vocab_compatible)
    models = {"A": {"lm": {"source": "local", "path": str(same)}},
              "B": {"lm": {"source": "local", "path": str(other)}}}
    check_shared_tokenizer(tokenizer(), "ref", {"A": models["A"]}, tmp_path)
    with pytest.raises(ConfigError) as err:
        check_shared_tokenizer(tokenizer(), "ref", models, tmp_path)
    assert err.value.key == "models.B.lm" and "'B'" in str(err.value) and "align: word" in str(err.value)


def test_config_errors_name_keys():
    with pytest.raises(ConfigError) as err:
        DataConfig.from_config({"source": "toy", "n_tokens": 4, "context_length": 8})
    assert err.value.key == "data.n_tokens"
    with pytest.raises(ConfigError) as err:
        DataConfig.from_config({"source": "toy", "packing": "zip"})
    assert err.value.key == "data.packing"


def test_toy_tokens_are_laid_out_like_the_toy_training_rows(tmp_path):
    """The analysed toy rows must look like the rows the toy LMs were trained on (<bos> + <bos>-joined stories)."""
    corpus = pytest.importorskip("featsim.toy.corpus")
    sequences = pytest.importorskip("featsim.toy.sequences")
    from featsim.toy.tokenizer import load_word_tokenizer

    exp_dir = tmp_path / "results" / "toy"
    corpus.build_corpus_dir(corpus.ToyCorpusConfig(n_stories=20, n_heldout_stories=60), exp_dir / "toy" / "corpus")
    tok = load_word_tokenizer(exp_dir / "toy" / "corpus" / "tokenizer")
    store = build_token_set(DataConfig.from_config({"source": "toy", "n_tokens": 640, "context_length": 64}),
                            tok, "toy", exp_dir)
    training_layout = sequences.story_rows(tok, exp_dir / "toy" / "corpus" / "heldout.txt", 64, max_rows=10)
    np.testing.assert_array_equal(store.tokens, training_layout)
    assert not store.mask[:, 0].any() and store.mask[store.tokens != tok.bos_token_id].all()


# ---------------------------------------------------------------- character spans and further stores (issue 15)


@pytest.mark.parametrize("packing", ["concat", "truncate"])
def test_spans_leave_rows_mask_and_attrs_unchanged(tmp_path, packing):
    """Same-tokenizer experiments stay bit-identical: asking for spans adds arrays, changes nothing else."""
    docs = documents(60)
    plain = build_token_set(config(packing=packing), tokenizer(), "t", tmp_path, documents=docs)
    with_spans = build_token_set(config(packing=packing), tokenizer(), "t", tmp_path, documents=docs, spans=True)
    np.testing.assert_array_equal(plain.tokens, with_spans.tokens)
    np.testing.assert_array_equal(plain.mask, with_spans.mask)
    assert plain.attrs == with_spans.attrs and plain.spans is None
    tok = tokenizer()
    for p in zip(*np.nonzero(with_spans.spans["doc"] >= 0)):  # each token's span is its text in its document
        doc, start, end = (int(with_spans.spans[name][p]) for name in ("doc", "char_start", "char_end"))
        assert docs[doc][start:end] == tok.convert_ids_to_tokens(int(with_spans.tokens[p]))
        assert with_spans.spans["word_end"][p]  # word-level: every token ends a word
    assert (with_spans.spans["doc"][~with_spans.mask] == -1).all()  # BOS, separators, padding: no document


def test_word_ends():
    from featsim.tokens import ends_word

    text = "the grandmother, sat"
    assert [end for end in range(len(text) + 1) if ends_word(text, end)] == [3, 15, 16, 20]


def test_further_store_tokenizes_the_documents_of_the_experiment_store(tmp_path):
    from tokenizers.pre_tokenizers import Sequence, Split, WhitespaceSplit

    from featsim.stores import open_tokens
    from featsim.targets.data import make_further_tokens

    exp_dir = tmp_path / "results" / "toy"
    corpus = exp_dir / "toy" / "corpus"
    tokenizer().save_pretrained(str(corpus / "tokenizer"))
    docs = documents(50)
    (corpus / "heldout.txt").write_text("\n".join(docs) + "\n")
    data = {"source": "toy", "n_tokens": 64, "context_length": 8}
    make_tokens(exp_dir / "tokens.zarr", data, {"A": {"lm": {"source": "toy"}}}, {}, exp_dir, spans=True)
    used = int(open_tokens(exp_dir / "tokens.zarr").read_spans()["doc"].max()) + 1
    chars = tokenizer(words=sorted({c for w in WORDS for c in w}))  # another tokenizer: one token per character
    chars.backend_tokenizer.pre_tokenizer = Sequence([WhitespaceSplit(), Split("", "isolated")])
    chars.save_pretrained(str(tmp_path / "chars"))
    make_further_tokens(exp_dir / "tokens" / "D.zarr", data, {"source": "local", "path": str(tmp_path / "chars")},
                        "D", {}, exp_dir, exp_dir / "tokens.zarr")
    further = open_tokens(exp_dir / "tokens" / "D.zarr")
    spans = further.read_spans()
    assert int(spans["doc"].max()) + 1 == used and further.attrs["store_of"] == "D"
    rebuilt = ["".join(docs[i][s:e] for s, e, d in zip(spans["char_start"], spans["char_end"], spans["doc"]) if d == i)
               for i in range(used)]
    assert rebuilt == [docs[i].replace(" ", "") for i in range(used)]  # every character of the same documents
    assert further.mask[:].sum() == sum(len(rebuilt[i]) for i in range(used))  # all of them unmasked
