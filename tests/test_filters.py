"""Junk-token normalisation and matching, junk lists from config/files, and the junk filter in pairing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featsim.correlate import CorrelationResult
from featsim.errors import ConfigError
from featsim.filters import (
    JunkList,
    above_min_corr,
    junk_flags,
    labels_by_latent,
    load_junk_tokens,
    normalise_token,
    shares_top_token,
    top_token_sets,
)
from featsim.pairing import PairingVariant, pair_variant


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("\n", ""),
        ("\\n", ""),  # a literal backslash-n, as the study wrote newlines
        (" \n", ""),
        ("\n\n", ""),
        ("\t", ""),
        ("", ""),
        (" ", ""),
        (" .", "."),
        (".\n", "."),
        ("\u2581the", "the"),  # SentencePiece space mark
        (" The", "The"),  # case is kept
        ("<bos>", "<bos>"),
        ("a\\nb", "a\nb"),
    ],
)
def test_normalise_token(text, normal):
    assert normalise_token(text) == normal


# Latents' decoded top tokens (descending activation); latent i's list is TOP[i].
TOP = [
    ["cat", "dog"],  # 0: concept
    ["cat", "\n"],  # 1: real newline token
    ["\\n", "dog"],  # 2: newline as the notebooks decoded it (literal backslash-n)
    [" .", "cat"],  # 3: period with a leading space
    ["\n\n", " "],  # 4: multi-character whitespace
    ["red", "blue", "."],  # 5: junk only at rank 3
    [" the", "a"],  # 6: concept-free but not listed
    [],  # 7: no top tokens (never fired on unmasked tokens)
]


def test_junk_entries_match_newline_and_whitespace_however_they_decode():
    for entries in (["\\n"], ["\n"], [" \n"], [""]):
        flags = junk_flags(TOP, JunkList(tuple(entries)))
        assert np.flatnonzero(flags.mask).tolist() == [1, 2, 4], entries


def test_junk_period_matches_a_spaced_period_and_respects_top_k():
    flags = junk_flags(TOP, JunkList((".",)))
    assert np.flatnonzero(flags.mask).tolist() == [3, 5]
    assert flags.hits[3] == (".",)
    assert np.flatnonzero(junk_flags(TOP, JunkList((".",)), top_k=2).mask).tolist() == [3]


def test_exact_mode_is_the_study_string_membership_test():
    study_list = JunkList((".", "\\n", "\n", "", " ", "-", ",", "!", "?"))
    exact = junk_flags(TOP, study_list, match="exact")
    # the study misses " ." and "\n\n" (B29) but catches "\n", "\\n", " " exactly
    assert np.flatnonzero(exact.mask).tolist() == [1, 2, 4, 5]
    assert exact.hits[4] == (" ",)
    assert np.flatnonzero(junk_flags(TOP, JunkList((" \n",)), match="exact").mask).tolist() == []
    with pytest.raises(ValueError, match="match"):
        junk_flags(TOP, study_list, match="fuzzy")


def test_junk_ids_match_token_ids():
    ids = [[5, 6], [0, 7], [8], [9, 0]]
    texts = [["a", "b"], ["<|endoftext|>", "c"], ["d"], ["e", "<|endoftext|>"]]
    flags = junk_flags(texts, JunkList((), (0,)), top_token_ids=ids)
    assert np.flatnonzero(flags.mask).tolist() == [1, 3]
    assert flags.hits[1] == ("id:0",)
    with pytest.raises(ValueError, match="top_token_ids"):
        junk_flags(TOP, JunkList((), (0,)))


def test_most_common_counts_each_latent_once():
    flags = junk_flags(TOP, JunkList((".", "\n")))
    assert dict(flags.most_common()) == {"": 3, ".": 2}
    assert dict(flags.most_common([1, 1, 3])) == {"": 1, ".": 1}


def test_load_junk_tokens_inline_text_file_and_yaml(tmp_path):
    assert load_junk_tokens(None) == JunkList()
    assert load_junk_tokens([".", "\\n", 0]) == JunkList((".", "\\n"), (0,))
    text_file = tmp_path / "junk.txt"
    text_file.write_text(".\n\\n\n\n .\n<bos>\n", encoding="utf-8")
    assert load_junk_tokens(str(text_file)) == JunkList((".", "\\n", " .", "<bos>"))
    yaml_file = tmp_path / "junk.yaml"
    yaml_file.write_text('- "."\n- "\\n"\n- 0\n', encoding="utf-8")
    assert load_junk_tokens(yaml_file) == JunkList((".", "\n"), (0,))
    with pytest.raises(ConfigError, match=r"pairings.x.junk_tokens\[1\]"):
        load_junk_tokens([".", 1.5], key="pairings.x.junk_tokens")
    with pytest.raises(ConfigError, match="does not exist"):
        load_junk_tokens(str(tmp_path / "missing.txt"), key="pairings.x.junk_tokens")
    (tmp_path / "bad.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="YAML list"):
        load_junk_tokens(str(tmp_path / "bad.yaml"))


def test_shares_top_token_and_min_corr():
    sets_a = top_token_sets([[1, 2, 3], [4]], top_k=2)
    sets_b = top_token_sets([[3, 9], [2], [4, 1]])
    assert shares_top_token(np.array([0, 0, 1, 0]), np.array([0, 1, 2, 2]), sets_a, sets_b).tolist() == [
        False,  # token 3 is outside A0's top 2
        True,
        True,
        True,
    ]
    assert above_min_corr(np.array([0.1, 0.11, np.nan]), 0.1).tolist() == [False, True, False]
    assert above_min_corr(np.array([-0.5, np.nan]), None).tolist() == [True, False]


def test_labels_by_latent_aligns_rows_and_rejects_foreign_labels():
    frame = pd.DataFrame({"latent": [2, 0], "top_tokens": [["x"], ["y", "z"]], "top_token_ids": [[5], [6, 7]]})
    labels = labels_by_latent(frame, 3)
    assert labels.top_tokens == [["y", "z"], [], ["x"]] and labels.top_token_ids == [[6, 7], [], [5]]
    with pytest.raises(ValueError, match="different SAEs"):
        labels_by_latent(frame, 2)
    with pytest.raises(ValueError, match="lacks columns"):
        labels_by_latent(frame.drop(columns="top_token_ids"), 3)


def _correlation(best_a_for_b, best_corr_for_b, d_a) -> CorrelationResult:
    """A top-1 CorrelationResult with the given best A partner of each B latent (A's best B: its first chooser)."""
    best_a_for_b = np.asarray(best_a_for_b, dtype=np.int64)
    best_corr_for_b = np.asarray(best_corr_for_b, dtype=float)
    d_b = len(best_a_for_b)
    choosers = [np.flatnonzero(best_a_for_b == a) for a in range(d_a)]
    best_b_for_a = np.array([found[0] if found.size else -1 for found in choosers], dtype=np.int64)
    best_corr_for_a = np.where(best_b_for_a >= 0, best_corr_for_b[np.maximum(best_b_for_a, 0)], np.nan)
    return CorrelationResult(
        topk_a_for_b=best_a_for_b[:, None],
        topk_corr_for_b=best_corr_for_b[:, None],
        topk_b_for_a=best_b_for_a[:, None],
        topk_corr_for_a=best_corr_for_a[:, None],
        n_active_a=np.full(d_a, 10),
        mean_a=np.zeros(d_a),
        std_a=np.ones(d_a),
        n_active_b=np.full(d_b, 10),
        mean_b=np.zeros(d_b),
        std_b=np.ones(d_b),
        subset_a=np.ones(d_a, bool),
        subset_b=np.ones(d_b, bool),
        used_a=np.ones(d_a, bool),
        used_b=np.ones(d_b, bool),
        n_tokens=100,
        min_active=5,
        top_k=1,
        engine="test",
    )


def _labels(tokens):
    return pd.DataFrame(
        {
            "latent": range(len(tokens)),
            "n_active": 10,
            "top_tokens": tokens,
            "top_token_ids": [[hash(t) % 1000 for t in row] for row in tokens],
        }
    )


def test_junk_filter_removes_what_it_should_b1_not_reproduced(tmp_path):
    """Regression: junk latents are really removed (the study's run_pipeline for-else made the filter a no-op, B1).

    A latents: 0 concept "cat", 1 newline, 2 " .", 3 "\\n\\n" and ".", 4 concept "dog". B latents 0..5 each pair
    with the A latent listed in `best`; B5 itself is a whitespace latent sharing no top token with its partner A0.
    """
    tokens_a = [["cat", " cat"], ["\n", "cat"], [" .", "dog"], ["\n\n", ".", "dog"], ["dog", "dogs"]]
    tokens_b = [["cat"], ["cat"], ["dog"], ["dog"], ["dog", "puppy"], [" ", "mouse"]]
    best = [0, 1, 2, 3, 4, 0]
    corr = _correlation(best, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], d_a=5)
    junk_file = tmp_path / "junk.txt"
    junk_file.write_text(".\n\\n\n", encoding="utf-8")  # the study's spelling of newline: literal backslash-n
    variant = PairingVariant(strategy="argmax", min_corr=0.1, junk_tokens=str(junk_file))
    pairs = pair_variant(corr, variant, _labels(tokens_a), _labels(tokens_b))
    assert list(zip(pairs.a.tolist(), pairs.b.tolist())) == [(0, 0), (4, 4)]
    counts = [step["n_pairs"] for step in pairs.diagnostics["filter_counts"]]
    assert counts == [6, 2, 2]  # candidates, junk, min_corr: the junk step removed 4 pairs
    assert pairs.diagnostics["n_junk_latents_a"] == 3 and pairs.diagnostics["n_junk_latents_b"] == 1
    assert dict(map(tuple, pairs.diagnostics["top_junk_tokens"]["a"])) == {"": 2, ".": 2}
    assert pairs.diagnostics["top_junk_tokens"]["b"] == [["", 1]]

    # legacy: same list, exact strings -> A3 (".") is junk, but "\\n" in the file matches no decoded newline and
    # " ." passes (B29); the shared-top-token requirement, discarded with the filter under B1, drops (A0, B5).
    legacy_variant = PairingVariant(strategy="legacy_keep_first", min_corr=0.1, junk_tokens=str(junk_file))
    legacy = pair_variant(corr, legacy_variant, _labels(tokens_a), _labels(tokens_b))
    steps = {step["step"]: step["n_pairs"] for step in legacy.diagnostics["filter_counts"]}
    assert steps["candidates"] == 6 and steps["junk"] == 5 and steps["shared_top_token"] == 4
    assert list(zip(legacy.a.tolist(), legacy.b.tolist())) == [(0, 0), (1, 1), (2, 2), (4, 4)]


def test_variant_without_labels_for_a_junk_list_is_an_error():
    corr = _correlation([0], [0.9], d_a=1)
    with pytest.raises(ValueError, match="labels"):
        pair_variant(corr, PairingVariant(strategy="argmax", junk_tokens=(".",)))
    assert len(pair_variant(corr, PairingVariant(strategy="argmax"))) == 1
