"""Semantic subspaces: concept files, whole-word membership, pairing inside a concept, scoring, toy accuracy."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from featsim.concepts import ConceptFileError, concept_overlaps, load_concept, load_concepts
from featsim.pairing import PairingVariant
from featsim.semantic import (
    MEMBER_COLUMNS,
    STATUS_NOT_SCORED,
    STATUS_PAIRED,
    SemanticConfig,
    assignment_accuracy,
    concept_members,
    concept_pairs,
    score_concept,
)


def write_concept(tmp_path, stem, **fields):
    body = {"name": stem.title(), "description": f"{stem} words", "case": "insensitive", **fields}
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def labels_of(top_words: dict[int, list[str]], n_latents: int | None = None) -> pd.DataFrame:
    n_latents = n_latents or max(top_words) + 1
    return pd.DataFrame({"latent": np.arange(n_latents),
                         "top_words": [top_words.get(i, []) for i in range(n_latents)]})


# ---------------------------------------------------------------- concept files


@pytest.mark.parametrize("fields, message", [
    ({"keywords": ["day"], "case": "lower"}, "'case' must be one of"),
    ({"keywords": ["day", "Day"]}, "duplicate keywords"),
    ({"keywords": ["day"], "homographs": ["night"]}, "not keywords"),
    ({"keywords": ["New York"]}, "single words"),
    ({"keywords": ["day"], "colour": "red"}, "unknown key"),
    ({"keywords": []}, "empty"),
    ({"keywords": ["day", 3]}, r"keywords\[1\]"),
    ({}, "missing required key"),
])
def test_concept_file_errors_name_the_file(tmp_path, fields, message):
    path = write_concept(tmp_path, "bad", **fields)
    with pytest.raises(ConceptFileError, match=message) as caught:
        load_concept(path)
    assert str(path) in str(caught.value)


def test_case_sensitive_concepts_may_hold_words_differing_only_in_case(tmp_path):
    concept = load_concept(write_concept(tmp_path, "marks", case="sensitive", keywords=["May", "may"]))
    assert concept.keywords == ("May", "may")


def test_concept_ids_must_be_unique_across_patterns(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_concept(tmp_path / "one", "animal", keywords=["cat"])
    write_concept(tmp_path / "two", "animal", keywords=["dog"])
    with pytest.raises(ConceptFileError, match="same concept id"):
        load_concepts(["one/*.yaml", "two/*.yaml"], root=tmp_path)
    with pytest.raises(ConceptFileError, match="matches no file"):
        load_concepts(["three/*.yaml"], root=tmp_path)


def test_shipped_study_concepts_are_clean_and_disjoint(repo):
    concepts = load_concepts(["configs/concepts/study/*.yaml"], root=repo)
    assert set(concepts) == {"time", "calendar", "people_roles", "nature", "emotions", "month_names",
                             "countries", "biology"}
    assert concept_overlaps(concepts.values()) == []  # Calendar is no longer a subset of Time
    assert concepts["month_names"].case == "sensitive" and concepts["countries"].case == "sensitive"
    assert "May" not in concepts["month_names"].matching_keywords  # the modal verb homograph
    assert {"kind", "free", "mad"} <= set(concepts["emotions"].homographs)
    assert len(concepts["calendar"].keywords) == 35 and len(concepts["time"].keywords) == 48


def test_overlaps_report_shared_words_and_subsets(tmp_path):
    time = load_concept(write_concept(tmp_path, "time", keywords=["day", "now", "soon"]))
    calendar = load_concept(write_concept(tmp_path, "calendar", keywords=["Day"]))
    assert concept_overlaps([time, calendar]) == [
        {"a": "time", "b": "calendar", "shared": ["day"], "a_subset_of_b": False, "b_subset_of_a": True}]


# ---------------------------------------------------------------- membership


def test_whole_word_rule_and_min_examples(tmp_path):
    people = load_concept(write_concept(tmp_path, "people", keywords=["man", "king"]))
    labels = labels_of({
        0: ["Brockman", "Brockman", "Brockman", "Brockman"],  # "man" inside a word: never a match
        1: ["man", "Man", "man,", "king", "the"],  # case-insensitive, punctuation stripped: 4 matches
        2: ["man", "man", "the", "a"],  # 2 matches < min_examples 3
        3: ['"King"', "king", "kingdom", "KING"],  # 3 matches; "kingdom" is another word
    }, n_latents=5)
    members, diagnostics = concept_members(labels, people, min_examples=3)
    assert list(members.columns) == list(MEMBER_COLUMNS)
    assert members["latent"].tolist() == [1, 3]
    first = members.iloc[0]
    assert first["keywords"] == ["man", "king"] and first["keyword_counts"] == [3, 1]
    assert first["top_keyword"] == "man" and first["n_matches"] == 4 and first["n_examples"] == 5
    assert members.iloc[1]["keywords"] == ["king"] and members.iloc[1]["n_matches"] == 3
    assert diagnostics["n_latents_any_match"] == 3 and diagnostics["n_members"] == 2


def test_case_sensitive_concept(tmp_path):
    concept = load_concept(write_concept(tmp_path, "title", case="sensitive", keywords=["Man"]))
    labels = labels_of({0: [" Man", "Man", "Man."], 1: ["man", "man", "MAN", "Man"]})
    members, _ = concept_members(labels, concept, min_examples=3)
    assert members["latent"].tolist() == [0]


def test_homographs_are_excluded_unless_the_concept_opts_in(tmp_path):
    labels = labels_of({0: ["kind"] * 4, 1: ["joy", "joy", "kind", "joy"]})
    plain = load_concept(write_concept(tmp_path, "emotions", keywords=["joy", "kind"],
                                       homographs={"kind": "a type or sort"}))
    members, diagnostics = concept_members(labels, plain, min_examples=3)
    assert members["latent"].tolist() == [1]
    assert members.iloc[0]["keywords"] == ["joy"]  # the homograph is not counted for latent 1 either
    assert diagnostics["n_members_if_homographs_included"] == 2
    opted_in = load_concept(write_concept(tmp_path, "emotions_all", keywords=["joy", "kind"],
                                          homographs=["kind"], include_homographs=True))
    members, _ = concept_members(labels, opted_in, min_examples=3)
    assert members["latent"].tolist() == [0, 1]


def test_min_examples_beyond_labels_top_k_is_a_config_error():
    with pytest.raises(Exception, match="semantic.min_examples"):
        SemanticConfig.from_config({"min_examples": 30}).check_against_labels(20)
    with pytest.raises(Exception, match="semantic.min_latents"):
        SemanticConfig.from_config({"min_latents": 0})


# ---------------------------------------------------------------- pairing and scoring inside a concept


def planted_codes(seed: int = 0):
    """A [n, 8] and B [n, 9] codes where A latent i and B latent PLANTED[i] fire together."""
    rng = np.random.default_rng(seed)
    n = 600
    codes_a = np.zeros((n, 8))
    codes_b = np.zeros((n, 9))
    for latent in range(8):
        rows = rng.choice(n, size=40, replace=False)
        codes_a[rows, latent] = rng.exponential(1.0, 40) + 0.1
    planted = {1: 2, 3: 5, 4: 0, 6: 8}  # concept latents of A -> their B twins
    for a, b in planted.items():
        codes_b[:, b] = codes_a[:, a] * (1.0 + 0.1 * rng.random(n))
    for b in (1, 3, 4, 6, 7):
        rows = rng.choice(n, size=40, replace=False)
        codes_b[rows, b] = rng.exponential(1.0, 40) + 0.1
    return sp.csr_matrix(codes_a), sp.csr_matrix(codes_b), planted


def members_table(latents, keywords):
    return pd.DataFrame({"latent": latents, "n_matches": 3, "n_examples": 20, "keywords": keywords,
                         "keyword_counts": [[3] * len(k) for k in keywords],
                         "top_keyword": [k[0] for k in keywords]})


@pytest.mark.parametrize("n_a, n_b", [(0, 4), (2, 4), (4, 2)])
def test_concepts_with_too_few_latents_are_not_scored(n_a, n_b):
    codes_a, codes_b, _ = planted_codes()
    members_a = members_table([1, 3, 4, 6][:n_a], [["day"]] * n_a)
    members_b = members_table([2, 5, 0, 8][:n_b], [["day"]] * n_b)
    result = concept_pairs(codes_a, codes_b, members_a, members_b, PairingVariant("one_to_one"),
                           top_k=4, min_active=5, min_latents=3)
    assert result.status == STATUS_NOT_SCORED and len(result.table) == 0
    assert "too few concept latents" in result.info["reason"]
    scored, null = score_concept(result.table, result.info, np.zeros((8, 4)), np.zeros((9, 4)), "cka", 10, 0)
    assert len(null) == 0 and scored["status"] == STATUS_NOT_SCORED and scored["reason"] == result.info["reason"]
    assert scored["n_latents_a"] == n_a and scored["n_latents_b"] == n_b


def test_pairs_stay_inside_the_concept_and_carry_keywords():
    codes_a, codes_b, planted = planted_codes()
    members_a = members_table([1, 3, 4, 6], [["day"], ["night", "day"], ["week"], ["dawn"]])
    # B latent 7 is a concept latent without a twin; B latents 1 and 3 are outside the concept.
    members_b = members_table([0, 2, 5, 7, 8], [["week"], ["day"], ["day"], ["noon"], ["dawn"]])
    result = concept_pairs(codes_a, codes_b, members_a, members_b, PairingVariant("one_to_one", min_corr=0.5),
                           top_k=4, min_active=5, min_latents=3)
    assert result.status == STATUS_PAIRED
    assert dict(zip(result.table["a"], result.table["b"])) == planted
    assert set(result.table["b"]) <= {0, 2, 5, 7, 8}
    row = result.table.set_index("a").loc[3]
    assert row["keywords_a"] == ["night", "day"] and row["top_keyword_b"] == "day"
    assert row["shared_keywords"] == ["day"]
    assert result.info["n_latents_a"] == 4 and result.info["n_pairs"] == 4


def test_too_few_pairs_after_pairing_is_not_scored():
    codes_a, codes_b, _ = planted_codes()
    members_a = members_table([1, 3, 4], [["day"]] * 3)
    members_b = members_table([1, 3, 7], [["day"]] * 3)  # no twins: correlations near zero
    result = concept_pairs(codes_a, codes_b, members_a, members_b, PairingVariant("one_to_one", min_corr=0.5),
                           top_k=4, min_active=5, min_latents=3)
    assert result.status == STATUS_NOT_SCORED and "too few pairs" in result.info["reason"]


def linear_cka(X, Y):
    """Textbook linear CKA of paired rows (columns centred)."""
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def test_score_concept_scores_exactly_the_concept_pairs_and_reports_keywords():
    codes_a, codes_b, planted = planted_codes()
    members_a = members_table([1, 3, 4, 6], [["day"], ["night", "day"], ["week"], ["dawn"]])
    members_b = members_table([0, 2, 5, 8], [["week"], ["day"], ["day"], ["dawn"]])
    result = concept_pairs(codes_a, codes_b, members_a, members_b, PairingVariant("one_to_one", min_corr=0.5),
                           top_k=4, min_active=5, min_latents=3)
    rng = np.random.default_rng(1)
    decoder_a = rng.normal(size=(8, 16))
    decoder_b = rng.normal(size=(9, 16))
    for a, b in planted.items():
        decoder_b[b] = decoder_a[a] @ np.eye(16)[::-1] + 0.05 * rng.normal(size=16)  # a rotation, plus noise
    scored, null = score_concept(result.table, result.info, decoder_a, decoder_b, "cka", 200, 7, device="cpu")
    a = result.table["a"].to_numpy()
    b = result.table["b"].to_numpy()
    # 4 pairs have 4! = 24 re-pairings, fewer than 200 draws: the null is every one but the observed (exact test)
    assert scored["status"] == "scored" and scored["n_pairs"] == 4 and len(null) == 23 and scored["null_exact"]
    assert scored["observed"] == pytest.approx(linear_cka(decoder_a[a], decoder_b[b]), abs=1e-9)
    every = [linear_cka(decoder_a[a], decoder_b[b][list(order)]) for order in itertools.permutations(range(4))]
    np.testing.assert_allclose(np.sort(null), np.sort(every[1:]), atol=1e-6)  # float32 null of the brute force
    exact_p = np.mean(np.asarray(every) >= every[0] - 1e-9)  # the observed pairing counts itself
    assert scored["p_value"] == pytest.approx(exact_p) and scored["p_min"] == pytest.approx(1 / 24)
    assert scored["keywords"]["a"] == {"day": 1, "night": 1, "week": 1, "dawn": 1}
    assert scored["keywords"]["shared"] == {"day": 2, "dawn": 1, "week": 1}
    assert scored["keywords"]["n_pairs_sharing_a_keyword"] == 4
    assert scored["n_latents_a"] == 4 and scored["few_pairs_flag"] is False
    json.dumps(scored)


def test_few_concept_pairs_leave_svcca_and_mutual_knn_not_scored_with_reasons():
    codes_a, codes_b, planted = planted_codes()
    members_a = members_table([1, 3, 4, 6], [["day"]] * 4)
    members_b = members_table([0, 2, 5, 8], [["day"]] * 4)
    result = concept_pairs(codes_a, codes_b, members_a, members_b, PairingVariant("one_to_one", min_corr=0.5),
                           top_k=4, min_active=5, min_latents=3)
    rng = np.random.default_rng(2)
    decoder_a, decoder_b = rng.normal(size=(8, 16)), rng.normal(size=(9, 16))
    # 4 centred pairs span 3 dimensions: the 99%-variance subspaces keep 3 + 3 >= n - 1 components
    degenerate, null = score_concept(result.table, result.info, decoder_a, decoder_b, "svcca", 50, 0, device="cpu")
    assert degenerate["status"] == "not_scored" and "k_a + k_b" in degenerate["reason"] and null.size == 0
    assert degenerate["k_a"] + degenerate["k_b"] >= 4 - 1 and degenerate["z"] is None
    knn, _ = score_concept(result.table, result.info, decoder_a, decoder_b, "mutual_knn", 50, 0, device="cpu")
    assert knn["status"] == "not_scored" and "k=10" in knn["reason"]
    # a fixed k = 1 per side keeps 2 < n - 1 components: scored, with the few-pairs guard flag
    fixed, _ = score_concept(result.table, result.info, decoder_a, decoder_b, "svcca", 50, 0, {"k": 1}, device="cpu")
    assert fixed["status"] == "scored" and (fixed["k_a"], fixed["k_b"]) == (1, 1) and fixed["few_pairs_flag"] is True
    assert any(flag.startswith("n_lt") for flag in fixed["flags"])


# ---------------------------------------------------------------- toy ground truth


def test_assignment_accuracy_on_planted_ground_truth(tmp_path):
    categories = {"cat": "animal", "dog": "animal", "owl": "animal", "red": "color", "blue": "color"}
    function = ["the", "a", ".", "was"]
    labels = labels_of({
        0: ["cat", "dog"] * 10,  # animal, assigned: true positive
        1: ["cat"] * 10 + function * 2 + ["the", "a"],  # 10/20 animal: animal at min_fraction 0.5, assigned
        2: ["dog"] * 3 + ["the"] * 17,  # assigned (3 matches) but mostly function words: false positive
        3: ["owl"] * 20,  # animal, but "owl" is missing from the concept file: false negative
        4: ["cat", "cat"],  # too few examples for any rule: not eligible
        5: ["red", "blue"] * 10,  # color, assigned to color
        6: ["blue"] * 2 + ["the"] * 18,  # nothing
    })
    concepts = {
        "animal": load_concept(write_concept(tmp_path, "animal", keywords=["cat", "dog"])),
        "colors": load_concept(write_concept(tmp_path, "colors", keywords=["red", "blue"], category="color")),
    }
    members = {cid: concept_members(labels, concept, min_examples=3)[0] for cid, concept in concepts.items()}
    assert members["animal"]["latent"].tolist() == [0, 1, 2]
    result = assignment_accuracy(members, categories, labels, concepts, min_examples=3, min_fraction=0.5)
    animal, colors = result["concepts"]["animal"], result["concepts"]["colors"]
    assert (animal["n_assigned"], animal["n_true"], animal["n_correct"]) == (3, 3, 2)
    assert animal["precision"] == pytest.approx(2 / 3) and animal["recall"] == pytest.approx(2 / 3)
    assert animal["false_positives"] == [2] and animal["false_negatives"] == [3]
    assert colors["precision"] == 1.0 and colors["recall"] == 1.0
    assert result["overall"]["micro_precision"] == pytest.approx(3 / 4)
    assert result["overall"]["micro_recall"] == pytest.approx(3 / 4)
    assert result["n_latents_eligible"] == 6


def test_accuracy_names_a_concept_whose_category_is_unknown(tmp_path):
    concept = load_concept(write_concept(tmp_path, "animals", keywords=["cat"]))
    labels = labels_of({0: ["cat"] * 3})
    members = {"animals": concept_members(labels, concept, 3)[0]}
    with pytest.raises(ConceptFileError, match="animals.yaml.*category 'animals'"):
        assignment_accuracy(members, {"cat": "animal"}, labels, {"animals": concept}, min_examples=3)


# ---------------------------------------------------------------- rule targets


def test_target_files_round_trip_status_keywords_and_accuracy(tmp_path):
    from featsim.parquet import read_parquet_provenance
    from featsim.targets.semantic import (read_concept_pairs, write_accuracy, write_concept_pairs, write_concept_score,
                                          write_members)
    from featsim.stores import write_codes

    codes_a, codes_b, planted = planted_codes()
    write_codes(tmp_path / "a.zarr", codes_a, {})
    write_codes(tmp_path / "b.zarr", codes_b, {})
    words = {1: ["day"] * 5, 3: ["night"] * 5, 4: ["day", "the"] * 3, 6: ["day"] * 3}
    labels_a = labels_of(words, n_latents=8).assign(top_tokens=lambda t: t["top_words"], top_token_ids=[[]] * 8)
    labels_b = labels_of({planted[a]: w for a, w in words.items()}, n_latents=9)
    labels_b = labels_b.assign(top_tokens=labels_b["top_words"], top_token_ids=[[]] * 9)
    labels_a.to_parquet(tmp_path / "la.parquet")
    labels_b.to_parquet(tmp_path / "lb.parquet")
    concept_path = write_concept(tmp_path, "calendar", keywords=["day", "night"])
    write_members(tmp_path / "la.parquet", concept_path, tmp_path / "ma.parquet", 3, ids={"model": "A"})
    write_members(tmp_path / "lb.parquet", concept_path, tmp_path / "mb.parquet", 3, ids={"model": "B"})
    assert pd.read_parquet(tmp_path / "ma.parquet")["latent"].tolist() == [1, 3, 4, 6]
    assert read_parquet_provenance(tmp_path / "ma.parquet")["diagnostics"]["n_members"] == 4

    write_concept_pairs(tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "ma.parquet", tmp_path / "mb.parquet",
                        tmp_path / "pairs.parquet", {"strategy": "one_to_one", "min_corr": 0.5},
                        {"top_k": 4, "min_active": 5}, 3, "one_to_one", labels_a_path=tmp_path / "la.parquet",
                        labels_b_path=tmp_path / "lb.parquet")
    table, info = read_concept_pairs(tmp_path / "pairs.parquet")
    assert info["status"] == STATUS_PAIRED and dict(zip(table["a"], table["b"])) == planted
    assert list(table.set_index("a").loc[3, "shared_keywords"]) == ["night"]

    rng = np.random.default_rng(0)
    np.save(tmp_path / "da.npy", rng.normal(size=(8, 6)))
    np.save(tmp_path / "db.npy", rng.normal(size=(9, 6)))
    identity = {"experiment": "t", "comparison": "main", "concept": "calendar", "pairing": "one_to_one",
                "layer_a": 0, "layer_b": 1}
    record = write_concept_score(tmp_path / "pairs.parquet", tmp_path / "da.npy", tmp_path / "db.npy", concept_path,
                                 tmp_path / "s.json", tmp_path / "s.null.npy", "rsa", {"permutations": 30},
                                 ids=identity)
    on_disk = json.loads((tmp_path / "s.json").read_text())
    assert on_disk["status"] == "scored" and on_disk["concept"] == "calendar" and on_disk["n_pairs"] == 4
    assert on_disk["provenance"]["kind"] == "semantic_score" and on_disk["seed"] == record["seed"]
    assert np.load(tmp_path / "s.null.npy").shape == (23,)  # 4 pairs: every re-pairing but the observed
    other = write_concept_score(tmp_path / "pairs.parquet", tmp_path / "da.npy", tmp_path / "db.npy", concept_path,
                                tmp_path / "o.json", tmp_path / "o.null.npy", "rsa", {"permutations": 30},
                                ids={**identity, "concept": "time"})
    assert other["seed"] != record["seed"]  # each concept cell has its own permutation stream

    write_concept_pairs(tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "ma.parquet", tmp_path / "mb.parquet",
                        tmp_path / "pairs5.parquet", {"strategy": "one_to_one"}, {"top_k": 4, "min_active": 5},
                        5, "one_to_one")
    table, info = read_concept_pairs(tmp_path / "pairs5.parquet")
    assert info["status"] == STATUS_NOT_SCORED and len(table) == 0 and "min_latents is 5" in info["reason"]
    record = write_concept_score(tmp_path / "pairs5.parquet", tmp_path / "da.npy", tmp_path / "db.npy", concept_path,
                                 tmp_path / "n.json", tmp_path / "n.null.npy", "rsa", {"permutations": 30},
                                 ids=identity)
    assert record["status"] == "not_scored" and record["reason"] == info["reason"]

    (tmp_path / "categories.json").write_text(json.dumps({"day": "calendar", "night": "calendar", "cat": "animal"}))
    result = write_accuracy(tmp_path / "la.parquet", [tmp_path / "ma.parquet"], [concept_path],
                            tmp_path, tmp_path / "accuracy.json", 3, 0.5)
    # latent 4 has 3 "day" among 6 examples: exactly half, so it is a true calendar latent at 0.5
    assert result["concepts"]["calendar"]["precision"] == 1.0 and result["concepts"]["calendar"]["recall"] == 1.0
    assert json.loads((tmp_path / "accuracy.json").read_text())["provenance"]["kind"] == "semantic_accuracy"


def test_toy_concept_files_load_and_map_to_the_corpus_categories(repo):
    from featsim.semantic import concept_category
    from featsim.toy.corpus import word_categories

    concepts = load_concepts(["configs/concepts/toy/*.yaml"], root=repo)
    categories = word_categories()
    assert {concept_category(c, categories) for c in concepts.values()} == set(categories.values())
    assert concept_overlaps(concepts.values()) == []


def test_min_fraction_keeps_latents_that_fire_mostly_on_the_concept():
    """3 animal words of 10 top examples: a member by count alone, not when half must match."""
    from featsim.concepts import concept_from_mapping
    from featsim.semantic import concept_members

    concept = concept_from_mapping({"name": "animal", "description": "animals", "case": "insensitive",
                                    "keywords": ["cat", "dog", "cow"]}, "animal.yaml")
    labels = pd.DataFrame({"latent": [0, 1],
                           "top_words": [["cat", "dog", "cow"] + ["the"] * 7, ["cat"] * 6 + ["the"] * 4]})
    by_count, _ = concept_members(labels, concept, min_examples=3)
    assert by_count["latent"].tolist() == [0, 1]
    by_share, diagnostics = concept_members(labels, concept, min_examples=3, min_fraction=0.5)
    assert by_share["latent"].tolist() == [1] and diagnostics["min_fraction"] == 0.5
