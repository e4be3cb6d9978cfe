"""Deterministic corpus of simple stories whose content words come from known concept categories.

Each story picks one entity per slot (a name, two animals, colours, months ...), emits an opening
sentence, 3-6 template sentences in random order and "the end .". Entities recur within a story, so
an LM profits from copying them, and words of one category fill the same slots, so an LM that learns
the corpus groups them: the ground truth (word -> category) is known by construction. The control
corpus holds the same stories with a fixed bijection on category words that sends every word to a
word of another category: syntax and function words are kept, concept structure is destroyed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from featsim.errors import ConfigError
from featsim.provenance import DIRECTORY_PROVENANCE, atomic_path, make_provenance, write_json
from featsim.toy.settings import config_from_dict

# Concept categories: every word is a single lowercase token that occurs in no other word class.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "animal": ("dog", "cat", "horse", "rabbit", "bird", "fox", "bear", "wolf",
               "mouse", "duck", "goat", "sheep", "pig", "cow", "frog", "owl"),
    "color": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black",
              "white", "gray", "gold", "silver", "violet", "crimson", "teal", "beige"),
    "emotion": ("happy", "sad", "angry", "scared", "excited", "calm", "proud", "lonely",
                "nervous", "curious", "tired", "bored", "surprised", "grateful", "jealous", "cheerful"),
    "family": ("mother", "father", "sister", "brother", "aunt", "uncle", "grandmother", "grandfather",
               "cousin", "son", "daughter", "wife", "husband", "niece", "nephew", "baby"),
    "place": ("park", "school", "beach", "forest", "market", "library", "garden", "river",
              "farm", "castle", "village", "lake", "mountain", "museum", "zoo", "bakery"),
    "food": ("apple", "bread", "cheese", "soup", "cake", "carrot", "banana", "cookie",
             "rice", "pizza", "pear", "honey", "pie", "grape", "potato", "lemon"),
    "number": ("two", "three", "four", "five", "six", "seven", "eight", "nine",
               "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "twenty"),
    "month": ("january", "february", "march", "april", "may", "june",
              "july", "august", "september", "october", "november", "december"),
}

# Protagonists and the pronoun set each one takes.
NAMES: dict[str, str] = {
    "anna": "she", "ben": "he", "clara": "she", "david": "he", "emma": "she", "felix": "he",
    "grace": "she", "henry": "he", "iris": "she", "jack": "he", "lily": "she", "max": "he",
    "nora": "she", "oscar": "he", "rosa": "she", "sam": "he",
}
PRONOUNS: dict[str, dict[str, str]] = {
    "she": {"subj": "she", "obj": "her", "poss": "her"},
    "he": {"subj": "he", "obj": "him", "poss": "his"},
}

# Slots: {name} {subj} {obj} {poss}, and per category {<category>} and a second, different {<category>2}.
OPENINGS: tuple[str, ...] = (
    "once there was a child named {name} who lived near the {place} .",
    "{name} was a {emotion} child who lived with {poss} {family} near the {place} .",
    "there once was a {color} {animal} that lived with {name} near the {place} .",
)
TEMPLATES: tuple[str, ...] = (
    "one day in {month} , {name} went to the {place} with {poss} {family} .",
    "{name} saw a {color} {animal} near the {place} .",
    "the {animal} was very {emotion} .",
    "{name} ate {number} pieces of {food} .",
    "{poss} {family} gave {obj} a {color2} {food} .",
    "{subj} felt {emotion} because the {animal} was {color} .",
    "in {month2} the {family} and {name} went back to the {place2} .",
    "{name} counted {number2} stars in the sky above the {place} .",
    "the {family2} was {emotion2} too .",
    "{name} and the {animal} shared the {food} at the {place} .",
    "{subj} waited {number} days until {month2} .",
    "everyone at the {place2} liked the {color} {animal2} .",
    "{name} wanted more {food2} , so {subj} asked {poss} {family} .",
)
ENDING = "the end ."
MIN_TEMPLATES, MAX_TEMPLATES = 3, 6

TRAIN_FILE = "train.txt"
TRAIN_PERMUTED_FILE = "train_permuted.txt"
HELDOUT_FILE = "heldout.txt"
HELDOUT_PERMUTED_FILE = "heldout_permuted.txt"
CATEGORIES_FILE = "categories.json"
PERMUTATION_FILE = "permutation.json"
LEXICON_FILE = "lexicon.json"
TOKENIZER_DIR = "tokenizer"


def read_categories(corpus_dir: str | Path) -> dict[str, str]:
    """The ground truth of a toy corpus directory: word -> concept category."""
    return json.loads((Path(corpus_dir) / CATEGORIES_FILE).read_text())


@dataclass(frozen=True)
class ToyCorpusConfig:
    """Settings of the story generator (config key `data.toy`)."""

    CONFIG_KEY: ClassVar[str] = "data.toy"
    n_stories: int = 12000  # training stories
    n_heldout_stories: int = 1500  # stories never trained on; the analysed tokens come from these
    seed: int = 0
    permutation_seed: int = 1

    def __post_init__(self) -> None:
        if self.n_stories < 1:
            raise ConfigError(f"{self.CONFIG_KEY}.n_stories", f"must be >= 1, got {self.n_stories}")
        if self.n_heldout_stories < 1:
            raise ConfigError(f"{self.CONFIG_KEY}.n_heldout_stories", f"must be >= 1, got {self.n_heldout_stories}")

    @classmethod
    def from_config(cls, values: dict[str, Any], key: str = CONFIG_KEY) -> "ToyCorpusConfig":
        """Build from the `data.toy` config slice; unknown keys are an error."""
        return config_from_dict(cls, values, key)


def word_categories() -> dict[str, str]:
    """The ground truth: category word -> category."""
    return {word: category for category, words in CATEGORIES.items() for word in words}


def function_words() -> list[str]:
    """Words (and punctuation) of the sentence frames: the same in both corpora."""
    frames = OPENINGS + TEMPLATES + (ENDING,)
    words = {w for frame in frames for w in re.sub(r"\{[^}]*\}", " ", frame).split()}
    pronouns = {form for forms in PRONOUNS.values() for form in forms.values()}
    return sorted(words | pronouns)


def vocabulary() -> list[str]:
    """Every word either corpus can contain, in a fixed order: function words, names, category words."""
    return function_words() + sorted(NAMES) + [w for words in CATEGORIES.values() for w in words]


def _draw_story(draws: np.ndarray) -> str:
    """The story encoded by one row of uniform draws in [0, 1) (see `_N_DRAWS` for the layout)."""
    names = sorted(NAMES)
    name = names[int(draws[0] * len(names))]
    slots: dict[str, str] = {"name": name, **PRONOUNS[NAMES[name]]}
    for c, (category, words) in enumerate(CATEGORIES.items()):
        first = int(draws[1 + 2 * c] * len(words))
        second = (first + 1 + int(draws[2 + 2 * c] * (len(words) - 1))) % len(words)  # != first
        slots[category] = words[first]
        slots[f"{category}2"] = words[second]
    base = 1 + 2 * len(CATEGORIES)
    opening = OPENINGS[int(draws[base] * len(OPENINGS))]
    n_templates = MIN_TEMPLATES + int(draws[base + 1] * (MAX_TEMPLATES - MIN_TEMPLATES + 1))
    order = np.argsort(draws[base + 2:], kind="stable")[:n_templates]  # a uniform random subset, in random order
    sentences = [opening, *(TEMPLATES[i] for i in order), ENDING]
    return " ".join(sentence.format(**slots) for sentence in sentences)


# Draws per story: name, two per category, opening, template count, one sort key per template.
_N_DRAWS = 1 + 2 * len(CATEGORIES) + 2 + len(TEMPLATES)


def generate_stories(n_stories: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """`n_stories` stories from `seed`, skipping any text in `exclude` (so held-out never repeats training)."""
    rng = np.random.default_rng(seed)
    stories: list[str] = []
    while len(stories) < n_stories:
        # Draws are vectorised (numpy per-call overhead dominates otherwise); the same seed gives the same text.
        for draws in rng.random((n_stories - len(stories), _N_DRAWS)):
            story = _draw_story(draws)
            if story not in exclude:
                stories.append(story)
    return stories


def category_permutation(seed: int) -> dict[str, str]:
    """A bijection on category words in which every word maps to a word of a different category."""
    category_of = word_categories()
    words = list(category_of)
    rng = np.random.default_rng(seed)
    targets = [words[i] for i in rng.permutation(len(words))]
    while True:
        # Each swap moves word i out of its own category without putting word j into its own.
        same = [i for i, word in enumerate(words) if category_of[targets[i]] == category_of[word]]
        if not same:
            break
        i = same[0]
        swappable = [j for j, word in enumerate(words)
                     if category_of[targets[j]] != category_of[words[i]]
                     and category_of[targets[i]] != category_of[word]]
        j = swappable[rng.integers(len(swappable))]
        targets[i], targets[j] = targets[j], targets[i]
    return dict(zip(words, targets))


def permute_story(story: str, permutation: dict[str, str]) -> str:
    """The story with every category word replaced by its image under `permutation`."""
    return " ".join(permutation.get(word, word) for word in story.split(" "))


def _seeds(seed: int) -> tuple[int, int]:
    """Independent streams for training and held-out stories, so n_stories does not change held-out text."""
    train_seq, heldout_seq = np.random.SeedSequence(seed).spawn(2)
    return int(train_seq.generate_state(1)[0]), int(heldout_seq.generate_state(1)[0])


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def write_corpus(out_dir: str | Path, n_stories: int, seed: int, permutation_seed: int,
                 n_heldout_stories: int = 1500) -> dict[str, Any]:
    """Write the stories, their permuted twins, the ground truth and the permutation into `out_dir`.

    Files: train.txt, train_permuted.txt, heldout.txt, heldout_permuted.txt (one story per line),
    categories.json (word -> category), permutation.json (word -> replacement), lexicon.json.
    Returns summary statistics (counts and token mix). `out_dir` is written in place; use
    `build_corpus_dir` for the atomic directory with tokenizer and provenance.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_seed, heldout_seed = _seeds(seed)
    train = generate_stories(n_stories, train_seed)
    heldout = generate_stories(n_heldout_stories, heldout_seed, exclude=frozenset(train))
    permutation = category_permutation(permutation_seed)
    _write_lines(out / TRAIN_FILE, train)
    _write_lines(out / TRAIN_PERMUTED_FILE, [permute_story(s, permutation) for s in train])
    _write_lines(out / HELDOUT_FILE, heldout)
    _write_lines(out / HELDOUT_PERMUTED_FILE, [permute_story(s, permutation) for s in heldout])
    write_json(out / CATEGORIES_FILE, word_categories())
    write_json(out / PERMUTATION_FILE, permutation)
    write_json(out / LEXICON_FILE, {"function_words": function_words(), "names": sorted(NAMES),
                                    "categories": {c: list(w) for c, w in CATEGORIES.items()}})
    return corpus_statistics(train, heldout)


def corpus_statistics(train: list[str], heldout: list[str]) -> dict[str, Any]:
    """Counts and the held-out token mix (function words / category words / names)."""
    category_of = word_categories()
    heldout_words = [w for story in heldout for w in story.split(" ")]
    n_category = sum(w in category_of for w in heldout_words)
    n_names = sum(w in NAMES for w in heldout_words)
    return {
        "n_train_stories": len(train),
        "n_heldout_stories": len(heldout),
        "n_train_words": sum(len(s.split(" ")) for s in train),
        "n_heldout_words": len(heldout_words),
        "heldout_fraction_category_words": n_category / len(heldout_words),
        "heldout_fraction_names": n_names / len(heldout_words),
        "vocabulary_size": len(vocabulary()),
    }


def build_corpus_dir(cfg: ToyCorpusConfig, out_dir: str | Path, ids: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `toy_corpus` target: corpus files, word-level tokenizer and provenance (`cfg`, `ids`, the corpus
    statistics), written atomically."""
    from featsim.toy.tokenizer import build_word_tokenizer  # transformers: imported only when needed

    with atomic_path(out_dir) as tmp:
        stats = write_corpus(tmp, cfg.n_stories, cfg.seed, cfg.permutation_seed, cfg.n_heldout_stories)
        build_word_tokenizer(vocabulary()).save_pretrained(str(tmp / TOKENIZER_DIR))
        record = make_provenance(asdict(cfg), kind="toy_corpus", **dict(ids or {}), **stats)
        write_json(tmp / DIRECTORY_PROVENANCE, record)
    return stats
