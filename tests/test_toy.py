"""Toy route: corpus ground truth, permutation control, tokenizer, tiny LM and SAE training (offline, tiny sizes)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from featsim.errors import ConfigError  # noqa: E402
from featsim.toy import concepts, corpus  # noqa: E402
from featsim.toy.corpus import CATEGORIES, NAMES, ToyCorpusConfig, build_corpus_dir, write_corpus  # noqa: E402
from featsim.toy.sequences import encode_stories, pack_rows, read_stories, story_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CORPUS = ToyCorpusConfig(n_stories=200, n_heldout_stories=60, seed=3, permutation_seed=5)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "corpus"
    build_corpus_dir(TINY_CORPUS, out)
    return out


def _lines(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text().splitlines()]


def test_corpus_is_deterministic_and_seed_dependent(tmp_path):
    write_corpus(tmp_path / "a", 50, seed=7, permutation_seed=2, n_heldout_stories=10)
    write_corpus(tmp_path / "b", 50, seed=7, permutation_seed=2, n_heldout_stories=10)
    write_corpus(tmp_path / "c", 50, seed=8, permutation_seed=2, n_heldout_stories=10)
    for name in ("train.txt", "train_permuted.txt", "heldout.txt", "categories.json", "permutation.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train.txt").read_text() != (tmp_path / "c" / "train.txt").read_text()
    # held-out stories come from their own stream: more training stories leave them unchanged
    write_corpus(tmp_path / "d", 80, seed=7, permutation_seed=2, n_heldout_stories=10)
    assert (tmp_path / "d" / "heldout.txt").read_text() == (tmp_path / "a" / "heldout.txt").read_text()


def test_ground_truth_map_and_word_classes(corpus_dir):
    truth = json.loads((corpus_dir / "categories.json").read_text())
    expected = {word: category for category, words in CATEGORIES.items() for word in words}
    assert truth == expected
    assert len(truth) == sum(len(words) for words in CATEGORIES.values())  # no word in two categories
    lexicon = json.loads((corpus_dir / "lexicon.json").read_text())
    function_words, names = set(lexicon["function_words"]), set(lexicon["names"])
    assert not function_words & set(truth) and not names & set(truth) and not function_words & names
    train, heldout = _lines(corpus_dir / "train.txt"), _lines(corpus_dir / "heldout.txt")
    assert len(train) == TINY_CORPUS.n_stories and len(heldout) == TINY_CORPUS.n_heldout_stories
    assert not {" ".join(s) for s in train} & {" ".join(s) for s in heldout}
    for story in train + heldout:
        assert story[-3:] == ["the", "end", "."]
        assert set(story) <= function_words | names | set(truth)
        protagonist = story[story.index("named") + 1] if "named" in story else next(w for w in story if w in names)
        assert protagonist in NAMES
    used = {w for story in train for w in story if w in truth}
    assert {truth[w] for w in used} == set(CATEGORIES)  # every category occurs


def test_permuted_corpus_is_a_cross_category_bijection(corpus_dir):
    truth = json.loads((corpus_dir / "categories.json").read_text())
    mapping = json.loads((corpus_dir / "permutation.json").read_text())
    assert sorted(mapping) == sorted(truth) and sorted(mapping.values()) == sorted(truth)
    assert all(truth[word] != truth[image] for word, image in mapping.items())
    for original_file, permuted_file in (("train.txt", "train_permuted.txt"), ("heldout.txt", "heldout_permuted.txt")):
        for original, permuted in zip(_lines(corpus_dir / original_file), _lines(corpus_dir / permuted_file),
                                      strict=True):
            assert len(original) == len(permuted)
            for word, twin in zip(original, permuted):
                assert twin == (mapping[word] if word in truth else word)


def test_tokenizer_round_trip_from_disk(corpus_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(corpus_dir / "tokenizer"))
    assert (tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token) == \
        ("<pad>", "<unk>", "<bos>", "<eos>")
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2, 3]
    assert len(tokenizer) == 4 + len(corpus.vocabulary())
    for name in ("train.txt", "train_permuted.txt", "heldout.txt"):
        stories = read_stories(corpus_dir / name)
        encoded = tokenizer(stories, add_special_tokens=False)["input_ids"]
        assert encode_stories(tokenizer, stories) == encoded  # the fast path equals the tokenizer
        for story, ids in zip(stories[:50], encoded):
            assert len(ids) == len(story.split(" ")) and tokenizer.unk_token_id not in ids
            assert tokenizer.decode(ids) == story
    with pytest.raises(ValueError, match="not in the tokenizer vocabulary"):
        encode_stories(tokenizer, ["the zebra ."])


def test_pack_rows_matches_plain_oracle():
    stories = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    rows = pack_rows(stories, context_length=4, bos_id=2)
    stream = [5, 6, 7, 2, 8, 9, 2, 10, 11, 12, 13]  # stories joined by <bos>
    expected = [[2] + stream[i:i + 3] for i in range(0, len(stream) - 2, 3)]
    assert rows.tolist() == expected


def test_story_rows_prefix_equals_full(corpus_dir):
    from featsim.toy.tokenizer import load_word_tokenizer

    tokenizer = load_word_tokenizer(corpus_dir / "tokenizer")
    full = story_rows(tokenizer, corpus_dir / "train.txt", 16)
    head = story_rows(tokenizer, corpus_dir / "train.txt", 16, max_rows=7)
    np.testing.assert_array_equal(head, full[:7])
    assert (full[:, 0] == tokenizer.bos_token_id).all()


def test_configs_reject_unknown_keys_naming_them():
    from featsim.toy.lm import ToyLMConfig
    from featsim.toy.sae import ToySAEConfig

    with pytest.raises(ConfigError, match="lm.toy.dmodel"):
        ToyLMConfig.from_config({"dmodel": 64})
    with pytest.raises(ConfigError, match=r"models\.B\.lm\.toy\.d_model.*multiple of d_head"):
        ToyLMConfig.from_config({"d_model": 40, "d_head": 16}, key="models.B.lm.toy")
    with pytest.raises(ConfigError, match="sae.toy.k"):
        ToySAEConfig(d_sae=8, k=9)
    with pytest.raises(ConfigError, match="data.toy.stories"):
        ToyCorpusConfig.from_config({"stories": 3})


TINY_LM = dict(d_model=32, n_layers=1, d_head=16, seed=4, n_ctx=32, epochs=1.0, batch_size=8, lr=1e-2, eval_rows=32)


@pytest.fixture(scope="module")
def lm_dir(corpus_dir) -> Path:
    from featsim.toy.lm import ToyLMConfig, train_toy_lm

    out = corpus_dir.parent / "lm"
    train_toy_lm(ToyLMConfig(**TINY_LM), corpus_dir, out, threads=1)
    return out


def test_tiny_lm_learns_reloads_and_is_deterministic(lm_dir, corpus_dir, tmp_path):
    import torch
    from featsim.toy.lm import ToyLMConfig, heldout_loss, load_toy_lm, train_toy_lm
    from transformer_lens import HookedTransformer

    metrics = json.loads((lm_dir / "metrics.json").read_text())
    assert metrics["steps"] >= 20
    assert metrics["heldout_loss"] < metrics["initial_heldout_loss"] - 0.5  # it learned something
    model = load_toy_lm(lm_dir)
    assert isinstance(model, HookedTransformer) and model.cfg.d_model == 32 and model.cfg.n_layers == 1
    assert model.tokenizer.bos_token == "<bos>" and model.cfg.d_vocab == len(model.tokenizer)
    rows = story_rows(model.tokenizer, corpus_dir / "heldout.txt", 32, max_rows=32)
    assert heldout_loss(model, rows) == pytest.approx(metrics["heldout_loss"], abs=1e-5)  # the saved weights
    again = load_toy_lm(lm_dir)
    tokens = torch.as_tensor(rows[:4])
    torch.testing.assert_close(model(tokens), again(tokens), rtol=0, atol=0)
    # same config, same thread count -> bit-identical checkpoint; the caller's torch settings are restored
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train_toy_lm(ToyLMConfig(**TINY_LM), corpus_dir, tmp_path / "lm2", threads=1)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
    assert (tmp_path / "lm2" / "model.safetensors").read_bytes() == (lm_dir / "model.safetensors").read_bytes()


def test_permuted_lm_trains_on_the_control_corpus(corpus_dir, tmp_path):
    from featsim.toy.lm import ToyLMConfig, train_toy_lm

    metrics = train_toy_lm(ToyLMConfig(**{**TINY_LM, "corpus": "permuted", "epochs": 0.3}), corpus_dir,
                           tmp_path / "lmC", threads=1)
    assert metrics["corpus"] == "permuted"
    assert metrics["heldout_loss"] != metrics["heldout_loss_original"]  # own (permuted) vs original text


def test_tiny_sae_trains_reloads_with_hook_and_is_deterministic(lm_dir, corpus_dir, tmp_path):
    from featsim.toy.sae import ToySAEConfig, train_toy_sae
    from safetensors.numpy import load_file
    from sae_lens import SAE

    cfg = ToySAEConfig(d_sae=64, k=4, seed=2, training_tokens=20_000, train_batch_size_tokens=256,
                       store_batch_size_prompts=8, n_batches_in_buffer=16, eval_rows=32)
    metrics = train_toy_sae(cfg, lm_dir, corpus_dir, 0, tmp_path / "sae", threads=1)
    sae = SAE.load_from_disk(str(tmp_path / "sae"))
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post" == metrics["hook_name"]
    assert sae.cfg.d_in == 32 and sae.cfg.d_sae == 64 and sae.cfg.architecture() == "topk"
    assert metrics["l0"] == pytest.approx(4.0) and 0 < metrics["fvu"] < 0.8
    provenance = json.loads((tmp_path / "sae" / "provenance.json").read_text())
    assert provenance["kind"] == "toy_sae" and provenance["layer"] == 0
    train_toy_sae(cfg, lm_dir, corpus_dir, 0, tmp_path / "sae2", threads=1)
    first, second = load_file(str(tmp_path / "sae" / "sae_weights.safetensors")), \
        load_file(str(tmp_path / "sae2" / "sae_weights.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    different_seed = train_toy_sae(replace(cfg, seed=3), lm_dir, corpus_dir, 0, tmp_path / "sae3", threads=1)
    assert not np.array_equal(load_file(str(tmp_path / "sae3" / "sae_weights.safetensors"))["W_dec"], first["W_dec"])
    assert different_seed["hook_name"] == metrics["hook_name"]


def test_sae_rejects_a_layer_the_lm_lacks(lm_dir, corpus_dir, tmp_path):
    from featsim.toy.sae import ToySAEConfig, train_toy_sae

    with pytest.raises(ConfigError, match="layer 3"):
        train_toy_sae(ToySAEConfig(d_sae=16, k=2, training_tokens=2000), lm_dir, corpus_dir, 3, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_committed_concept_files_match_the_generator():
    directory = REPO / "configs" / "concepts" / "toy"
    committed = sorted(p.stem for p in directory.glob("*.yaml"))
    assert committed == sorted(CATEGORIES)
    for category in CATEGORIES:
        assert (directory / f"{category}.yaml").read_text() == concepts.render_concept_file(category), \
            f"configs/concepts/toy/{category}.yaml is stale: run python -m featsim.toy.concepts configs/concepts/toy"
        import yaml
        spec = yaml.safe_load((directory / f"{category}.yaml").read_text())
        assert spec["keywords"] == list(CATEGORIES[category]) and spec["case"] == "insensitive"
        assert spec["name"] == category and spec["source"] == "toy corpus generator"


# ---------------------------------------------------------------- a toy LM with its own (BPE) tokenizer (issue 15)


def test_bpe_tokenizer_splits_words_into_pieces_with_character_offsets(corpus_dir):
    from featsim.toy.tokenizer import build_bpe_tokenizer, is_word_level, load_word_tokenizer

    stories = read_stories(corpus_dir / "train.txt")
    bpe = build_bpe_tokenizer(stories, 64)
    assert not is_word_level(bpe) and is_word_level(load_word_tokenizer(corpus_dir / "tokenizer"))
    assert [bpe.convert_tokens_to_ids(t) for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]
    assert build_bpe_tokenizer(stories, 64).get_vocab() == bpe.get_vocab()  # deterministic
    story = stories[0]
    encoded = bpe(story, add_special_tokens=False, return_offsets_mapping=True)
    assert bpe.decode(encoded["input_ids"]) == story
    assert len(encoded["input_ids"]) > 1.5 * len(story.split())  # most words are several tokens
    word_ends = {i + len(w) for i, w in ((story.index(w, sum(len(x) + 1 for x in story.split()[:k])), w)
                                         for k, w in enumerate(story.split()))}
    assert word_ends <= {end for _, end in encoded["offset_mapping"]}  # every word end is a token end


def test_bpe_story_rows_pack_the_tokenizer_output(corpus_dir, tmp_path):
    from featsim.toy.tokenizer import build_bpe_tokenizer

    bpe = build_bpe_tokenizer(read_stories(corpus_dir / "train.txt"), 64)
    stories = read_stories(corpus_dir / "heldout.txt")
    ids = [bpe(s, add_special_tokens=False)["input_ids"] for s in stories]
    expected = pack_rows(ids, 32, bpe.bos_token_id)
    np.testing.assert_array_equal(story_rows(bpe, corpus_dir / "heldout.txt", 32), expected)
    np.testing.assert_array_equal(story_rows(bpe, corpus_dir / "heldout.txt", 32, max_rows=3), expected[:3])
    assert encode_stories(bpe, stories[:2]) == ids[:2]


def test_bpe_lm_trains_and_keeps_its_tokenizer(corpus_dir, tmp_path):
    from featsim.toy.lm import ToyLMConfig, load_toy_lm, train_toy_lm

    metrics = train_toy_lm(ToyLMConfig(**{**TINY_LM, "epochs": 0.3, "tokenizer": "bpe", "bpe_vocab_size": 64}),
                           corpus_dir, tmp_path / "lmD", threads=1)
    assert metrics["tokenizer"] == "bpe" and metrics["vocab_size"] == 64
    model = load_toy_lm(tmp_path / "lmD")
    assert model.cfg.d_vocab == 64 and len(model.tokenizer) == 64 and model.tokenizer.bos_token == "<bos>"
    with pytest.raises(ConfigError, match="lm.toy.tokenizer"):
        ToyLMConfig.from_config({"tokenizer": "chars"})
