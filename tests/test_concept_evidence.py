"""Concept labels, concept agreement (CA) and tests between comparisons, against independent oracles:
brute-force counting, exact enumeration of permutations, scipy.stats, and planted ground truth."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from featsim.concept_agreement import agreeing_latents, cell_agreement, concept_agreement
from featsim.concept_evidence import ComparisonCells, agreement_table, contrasts_table
from featsim.concept_labels import LabelRule, label_latents
from featsim.concepts import concept_from_mapping
from featsim.config import validate_config
from featsim.contrasts import (binomial_two_sided, difference_in_differences, match_cells, mcnemar_exact,
                               recall_difference_test)
from featsim.errors import ConfigError

ANIMALS = ["cat", "dog", "fox", "owl", "cow"]
COLOURS = ["red", "blue", "green", "pink", "gray"]


def _concept(name, keywords, **extra):
    return concept_from_mapping({"name": name, "description": name, "case": "insensitive", "keywords": keywords,
                                 **extra}, f"{name}.yaml")


CONCEPTS = [_concept("animal", ANIMALS), _concept("color", COLOURS, homographs=["pink"])]


# ---------------------------------------------------------------- labels


def _brute_force_label(words, concepts, rule):
    """The label rule written out directly, one latent at a time."""
    counts = {}
    for concept in concepts:
        matched = [w.strip(' ,."').lower() for w in words
                   if w.strip(' ,."').lower() in {k.lower() for k in concept.matching_keywords}]
        if matched:
            counts[concept.id] = (len(matched), len(set(matched)))
    if not words or not counts:
        return None
    best = max(counts.values())[0]
    winners = [c for c, (n, _) in counts.items() if n == best]
    concept = winners[0]
    n, distinct = counts[concept]
    if n < rule.min_examples or n < rule.min_fraction * len(words) or len(winners) > 1 or distinct < rule.min_keywords:
        return None
    return concept


def test_labels_follow_the_rule_on_random_latents():
    rng = np.random.default_rng(0)
    vocabulary = ANIMALS + COLOURS + ["the", "a", "Cat,", "RED", "ran", "."]
    top_words = [list(rng.choice(vocabulary, size=rng.integers(0, 12))) for _ in range(400)]
    labels = pd.DataFrame({"latent": np.arange(400), "top_words": top_words})
    for rule in (LabelRule(0.5, 3), LabelRule(0.3, 2, min_examples=3), LabelRule(0.0, 1)):
        table = label_latents(labels, CONCEPTS, rule)
        expected = [_brute_force_label(words, CONCEPTS, rule) for words in top_words]
        assert [c if isinstance(c, str) else None for c in table["concept"]] == expected
        assert (table["status"] == "labelled").sum() == sum(e is not None for e in expected) > 0


def test_label_statuses_and_evidence():
    labels = pd.DataFrame({"latent": [0, 1, 2, 3, 4, 5], "top_words": [
        ["Cat,", "dog", "fox", "the"],  # 3 keywords, 3 of 4
        ["cat"] * 6,  # one word: a token feature
        ["cat", "dog", "red", "blue"],  # tie
        [],
        ["the", "a", "ran"],
        ["pink", "pink", "red", "the"],  # pink is a homograph: 1 of 4
    ]})
    table = label_latents(labels, CONCEPTS, LabelRule(0.5, 3)).set_index("latent")
    assert table.loc[0, "concept"] == "animal" and table.loc[0, "status"] == "labelled"
    assert list(table.loc[0, "keywords"]) == ["cat", "dog", "fox"] and table.loc[0, "n_matches"] == 3
    assert table.loc[1, "status"] == "too_few_keywords" and list(table.loc[1, "keyword_counts"]) == [6]
    assert table.loc[2, "status"] == "tie" and pd.isna(table.loc[2, "concept"])
    assert table.loc[3, "status"] == "no_examples"
    assert table.loc[4, "status"] == "no_match"
    assert table.loc[5, "status"] == "below_fraction" and table.loc[5, "n_matches"] == 1


def test_label_rule_rejects_bad_thresholds_naming_the_key():
    with pytest.raises(ConfigError, match="semantic.min_keywords"):
        LabelRule(0.5, 0)
    with pytest.raises(ConfigError, match="semantic.min_fraction"):
        LabelRule(1.5, 3)


# ---------------------------------------------------------------- concept agreement


def test_agreement_and_p_match_exact_enumeration():
    concept_a = ["animal", "animal", "color", "color", "color", "food", None, "animal"]
    concept_b = ["animal", "color", "color", "color", None, "food", "animal", "food"]
    result = concept_agreement(concept_a, concept_b, n_permutations=40000, seed=1)
    labelled = [i for i, c in enumerate(concept_a) if c is not None]
    a = [concept_a[i] for i in labelled]
    b = [concept_b[i] for i in labelled]
    observed = sum(x == y for x, y in zip(a, b))
    null = np.array([sum(x == y for x, y in zip(a, perm)) for perm in itertools.permutations(b)])
    assert result.overall.n_labelled == 7 and result.overall.n_agree == observed == 4
    assert result.overall.agreement == pytest.approx(4 / 7)
    assert result.overall.p == pytest.approx((null >= observed).mean(), abs=0.006)
    assert result.overall.null_mean == pytest.approx(null.mean() / 7, abs=0.003)
    animal = [i for i, x in enumerate(a) if x == "animal"]
    null_animal = np.array([sum(a[i] == perm[i] for i in animal) for perm in itertools.permutations(b)])
    stat = result.per_concept["animal"]
    assert (stat.n_labelled, stat.n_agree) == (3, 1)
    assert stat.p == pytest.approx((null_animal >= 1).mean(), abs=0.006)
    assert result.overall.p_min == pytest.approx((null == null.max()).mean(), abs=0.003)


def test_recall_counts_unpaired_labelled_latents():
    labels_a = pd.Series({0: "animal", 1: "animal", 2: "color", 3: None, 4: "color"})
    labels_b = pd.Series({10: "animal", 11: "color", 12: None})
    result = cell_agreement(np.array([0, 1, 3]), np.array([10, 11, 12]), labels_a, labels_b, n_permutations=99)
    assert result.overall.n_concept_a == 4 and result.overall.n_agree_latents == 1
    assert result.overall.recall == pytest.approx(1 / 4)
    assert result.per_concept["color"].status == "not_scored"  # no pair of a color A latent
    assert result.per_concept["color"].recall == 0.0
    agree = agreeing_latents(np.array([0, 1, 3]), np.array([10, 11, 12]), labels_a, labels_b)
    assert agree.to_dict() == {0: True, 1: False, 2: False, 4: False}


def _random_cell(rng, n_latents=400, concepts=("x", "y")):
    """Labels of an A and a B layer and a random one-to-one re-pairing of their latents (no shared concepts)."""
    labels_a = pd.Series(rng.choice([*concepts, None], size=n_latents))
    labels_b = pd.Series(rng.choice([*concepts, None], size=n_latents))
    return labels_a, labels_b, np.arange(n_latents), rng.permutation(n_latents)


def test_agreement_p_values_are_uniform_under_random_re_pairing():
    rng = np.random.default_rng(7)
    p_values = []
    for replicate in range(300):
        labels_a, labels_b, pairs_a, pairs_b = _random_cell(rng)
        result = concept_agreement(labels_a.to_numpy()[pairs_a], labels_b.to_numpy()[pairs_b], n_permutations=199,
                                   seed=replicate)
        p_values.append(result.overall.p)
    p_values = np.array(p_values)
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert (p_values <= 0.05).mean() <= 0.05 + 0.03  # valid at the usual level


def test_agreement_detects_shared_concepts_and_not_a_wrong_category_map():
    rng = np.random.default_rng(3)
    concepts = ["animal", "color", "food", "month"]
    labels_a = pd.Series(rng.choice([*concepts, None], size=200))
    # B shares A's concepts on 70% of the paired latents
    shared = rng.random(200) < 0.7
    labels_b = pd.Series(np.where(shared, labels_a.to_numpy(), rng.choice([*concepts, None], size=200)))
    pairs = np.arange(200)
    right = cell_agreement(pairs, pairs, labels_a, labels_b, n_permutations=2000, seed=0)
    assert right.overall.p < 0.001 and right.overall.agreement > 0.6
    wrong_map = dict(zip(concepts, concepts[1:] + concepts[:1]))  # every concept sent to another one
    remapped = labels_b.map(lambda c: wrong_map.get(c) if c else None)
    wrong = cell_agreement(pairs, pairs, labels_a, remapped, n_permutations=2000, seed=0)
    assert wrong.overall.p > 0.05


# ---------------------------------------------------------------- tests between comparisons


@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
@pytest.mark.parametrize("x_only,y_only", [(0, 0), (7, 1), (1, 7), (12, 12), (30, 9), (0, 25)])
def test_mcnemar_matches_scipy_binomtest(x_only, y_only, alternative):
    agree_x = np.array([True] * x_only + [False] * y_only + [True] * 5 + [False] * 4)
    agree_y = np.array([False] * x_only + [True] * y_only + [True] * 5 + [False] * 4)
    result = mcnemar_exact(agree_x, agree_y, alternative)
    n = x_only + y_only
    assert result.statistic == x_only - y_only and result.n == n
    expected = 1.0 if n == 0 else stats.binomtest(x_only, n, 0.5, alternative=alternative).pvalue
    assert result.p == pytest.approx(expected, rel=1e-12)
    floor = 1.0 if n == 0 else stats.binomtest(n, n, 0.5, alternative=alternative).pvalue
    assert result.p_min == pytest.approx(floor, rel=1e-12)
    if alternative == "two-sided":
        assert binomial_two_sided(x_only, n) == pytest.approx(expected, rel=1e-12)


def test_recall_test_matches_the_exact_hypergeometric_p():
    agree_x = np.array([True] * 14 + [False] * 6)
    agree_y = np.array([True] * 6 + [False] * 12)
    result = recall_difference_test(agree_x, agree_y, n_permutations=40000, seed=0, alternative="two-sided")
    greater = recall_difference_test(agree_x, agree_y, n_permutations=40000, seed=0)
    observed = agree_x.mean() - agree_y.mean()
    total, n_x, n_y = 20, agree_x.size, agree_y.size  # agreeing latents, group sizes
    k = np.arange(0, n_x + 1)
    pmf = stats.hypergeom(n_x + n_y, total, n_x).pmf(k)
    differences = k / n_x - (total - k) / n_y
    exact = pmf[np.abs(differences) >= abs(observed) - 1e-12].sum()
    assert result.statistic == pytest.approx(observed)
    assert result.p == pytest.approx(exact, abs=0.004)
    assert greater.p == pytest.approx(pmf[differences >= observed - 1e-12].sum(), abs=0.004)


def test_difference_in_differences_matches_scipy_permutation_test():
    rng = np.random.default_rng(5)
    r_x = rng.uniform(0.2, 0.9, size=60)
    is_concept = np.zeros(60, dtype=bool)
    is_concept[:15] = True
    r_y = r_x - 0.05 - 0.08 * is_concept + rng.normal(0, 0.05, size=60)  # concept latents lose more in Y
    r_x[3] = np.nan  # not live in X: left out
    result = difference_in_differences(r_x, r_y, is_concept, n_permutations=20000, seed=1, alternative="two-sided")
    greater = difference_in_differences(r_x, r_y, is_concept, n_permutations=20000, seed=1)
    live = np.isfinite(r_x)
    d = (r_x - r_y)[live]
    c = is_concept[live]
    reference = stats.permutation_test((d[c], d[~c]), lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis),
                                       permutation_type="independent", n_resamples=20000, vectorized=True,
                                       alternative="two-sided", random_state=0)
    assert result.n == 59 and result.statistic == pytest.approx(reference.statistic)
    assert result.p == pytest.approx(reference.pvalue, abs=0.005)
    assert result.p < 0.01
    one_sided = stats.permutation_test((d[c], d[~c]), lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis),
                                       permutation_type="independent", n_resamples=20000, vectorized=True,
                                       alternative="greater", random_state=0)
    assert greater.p == pytest.approx(one_sided.pvalue, abs=0.005)
    uniform_drop = difference_in_differences(r_x, r_x - 0.3, is_concept, n_permutations=2000, seed=1)
    assert uniform_drop.statistic == pytest.approx(0, abs=1e-12) and uniform_drop.p > 0.5


def test_cells_match_by_layers_then_by_position():
    matches = match_cells([0, 1], [0, 1], [0, 1], [2, 3])
    assert [(m.layer_b, m.layer_b_y, m.match) for m in matches[:2]] == [(0, 2, "by position"), (1, 3, "by position")]
    matches = match_cells([0, 1], [0, 1], [1], [1])
    assert [(m.layer_a, m.layer_b, m.layer_b_y) for m in matches if m.layer_b_y is not None] == [(1, 1, 1)]
    assert {m.reason.split(" ")[0] for m in matches if m.layer_b_y is None} == {"layer_a", "layer_b"}


def _toy_grid(rng, name: str, model_b: str):
    """Comparison of A (2 layers x 160 latents) with a B side: latent i paired with latent i, in every cell."""
    concepts = ["animal", "color", "food"]
    pairs, best = {}, {}
    for la, lb in itertools.product([0, 1], [0, 1]):
        pairs[(la, lb)] = pd.DataFrame({"a": np.arange(150), "b": np.arange(150)})
        best[(la, lb)] = rng.uniform(0.3, 0.9, size=160)
    return ComparisonCells(name, "A", model_b, [0, 1], [0, 1], pairs, best), concepts


def test_tables_separate_a_planted_main_from_its_control():
    rng = np.random.default_rng(11)
    main, concepts = _toy_grid(rng, "main", "B")
    control, _ = _toy_grid(rng, "control", "C")
    main.contrast = ["control"]
    labels = {}
    labels_a = pd.Series(rng.choice([*concepts, None], size=160))  # the same concept latents at both layers
    is_concept = labels_a.notna().to_numpy()
    for layer in (0, 1):
        labels[("A", layer)] = labels_a
        labels[("B", layer)] = pd.Series(np.where(rng.random(160) < 0.8, labels_a, None))
        labels[("C", layer)] = pd.Series(rng.choice([*concepts, None], size=160))
        for lb in (0, 1):
            control.best_corr_a[(layer, lb)] = main.best_corr_a[(layer, lb)] - 0.1 - 0.2 * is_concept
    agreement = agreement_table([main, control], labels, pairing="p", n_permutations=999, seed=0)
    overall = agreement[agreement["concept"] == ""].set_index("comparison")
    assert (overall.loc["main", "p_holm"] < 0.01).all() and len(overall.loc["main"]) == 4
    assert (overall.loc["main", "p_holm"] >= overall.loc["main", "p"]).all()
    contrasts = contrasts_table([main, control], labels, pairing="p", n_permutations=999, seed=0)
    assert set(contrasts["test"]) == {"mcnemar", "did_best_corr"}
    assert (contrasts["p_holm"] < 0.01).all() and (contrasts["statistic"] > 0).all()
    assert (contrasts["match"] == "same layers").all() and (contrasts["family_size"] == 4).all()


def test_contrast_must_name_another_comparison():
    config = {"experiment": "x", "data": {"source": "toy"}, "models": {
        "A": {"lm": {"source": "toy"}, "layers": [0], "sae": {"source": "toy"}}},
        "comparisons": {"main": {"a": "A", "b": "A", "contrast": ["contol"]}}}
    with pytest.raises(ConfigError, match="comparisons.main.contrast"):
        validate_config(config)


def test_shared_concepts_table_says_what_separates_and_what_does_not():
    from featsim.shared_concepts import shared_concepts_table

    cells = pd.DataFrame({"layer_a": [0, 0, 1, 1], "layer_b": [0, 1, 0, 1]})

    def summary(p_adjusted, status="scored"):
        return cells.assign(metric="rsa", status=status, reason="", observed=0.3, null_mean=0.0,
                            p_adjusted=p_adjusted)

    summaries = {("main", "p"): summary([0.001] * 4), ("control", "p"): summary([0.001, 0.2, 0.001, 0.001])}
    agreement = pd.concat([cells.assign(comparison=c, concept="", status="scored", agreement=a, null_mean=0.1, p_holm=q,
                                        recall=0.4) for c, a, q in (("main", 0.8, 0.001), ("control", 0.1, 0.5))])
    contrasts = cells.assign(comparison="main", contrast="control", test="mcnemar", status="scored",
                             statistic=[9, 8, 7, -2], p_holm=[0.001, 0.001, 0.001, 0.001], value_x=0.5, value_y=0.1,
                             null_mean=np.nan)
    table = shared_concepts_table({"main": ["control"]}, summaries, {}, {"p": agreement}, {"p": contrasts}, None)
    verdict = table.set_index("statistic")["separates"]
    assert verdict["rsa"] == "partly"  # X significant and Y not in 1 of 4 cells
    assert verdict["concept agreement"] == "yes"
    assert verdict["mcnemar"] == "partly"  # one cell favours the control
    assert verdict["concept recall"] == "n/a"
    summaries[("main", "p")] = summary([np.nan] * 4, status="not_scored")
    table = shared_concepts_table({"main": ["control"]}, summaries, {}, {"p": agreement}, {"p": contrasts}, None)
    assert table.set_index("statistic").loc["rsa", "separates"] == "not scored"


def test_concept_labels_target_labels_each_layer_by_the_rule_and_names_it(tmp_path):
    """The target of the concept_labels rule: each labels table gets the brute-force labels, its own (model,
    layer) in the provenance, and a min_examples above the stored top_k stops with the config key."""
    import yaml

    from featsim.parquet import read_parquet_provenance, write_parquet
    from featsim.targets.concepts import write_concept_labels

    concept_files = []
    for name, words in (("animal", ANIMALS), ("color", COLOURS)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "description": name, "case": "insensitive", "keywords": words}))
        concept_files.append(path)
    rng = np.random.default_rng(1)
    vocabulary = ANIMALS + COLOURS + ["the", "a", "ran"]
    tables, label_paths = [], []
    for layer in (0, 1):
        top_words = [list(rng.choice(vocabulary, size=rng.integers(0, 10))) for _ in range(60)]
        tables.append(top_words)
        label_paths.append(tmp_path / f"labels_L{layer}.parquet")
        write_parquet(label_paths[-1], pd.DataFrame({"latent": np.arange(60), "top_words": top_words}), {"top_k": 10})
    rule = LabelRule(0.3, 2, min_examples=3)
    outputs = [tmp_path / "out_L0.parquet", tmp_path / "out_L1.parquet"]
    write_concept_labels(label_paths, concept_files, outputs, rule, [("A", 0), ("A", 1)], ids={"experiment": "e"})
    concepts = [_concept("animal", ANIMALS), _concept("color", COLOURS)]
    for layer, (top_words, out) in enumerate(zip(tables, outputs)):
        written = pd.read_parquet(out)
        expected = [_brute_force_label(words, concepts, rule) for words in top_words]
        assert [c if isinstance(c, str) else None for c in written["concept"]] == expected
        provenance = read_parquet_provenance(out)
        assert (provenance["model"], provenance["layer"], provenance["experiment"]) == ("A", layer, "e")
        assert provenance["n_labelled"] == sum(e is not None for e in expected)
    with pytest.raises(ConfigError) as err:
        write_concept_labels(label_paths, concept_files, outputs, LabelRule(0.3, 2, min_examples=11),
                             [("A", 0), ("A", 1)], ids={"experiment": "e"})
    assert err.value.key == "semantic.min_examples"
