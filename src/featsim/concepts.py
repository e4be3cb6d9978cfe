"""Concept keyword lists (`configs/concepts/**/*.yaml`): loading, validation, whole-word matching, overlaps.

A concept file is one YAML mapping:

    name: Time                     # display name
    description: relative and abstract time words (calendar units are in calendar.yaml)
    case: insensitive              # insensitive | sensitive: how a word is compared with a keyword
    keywords: [now, soon, later]   # single words, no duplicates under the case rule
    homographs:                    # optional: keywords with another common sense, as {keyword: that sense}
      present: gift; to show       #   (or a plain list); they never match unless include_homographs
    include_homographs: false      # optional opt-in
    category: animal               # optional: ground-truth category (toy corpus categories.json)
    source: toy corpus generator   # optional: where the list comes from (free text)

The concept's id, used in file targets (`{concept}`), is the file stem. Every error names the file.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

CASE_RULES = ("insensitive", "sensitive")
REQUIRED_KEYS = ("name", "description", "case", "keywords")
OPTIONAL_KEYS = ("homographs", "include_homographs", "category", "source")
CONCEPT_ID = re.compile(r"^[A-Za-z0-9_\-]+$")  # the `{concept}` wildcard constraint
# Characters stripped from both ends of a rebuilt word before comparing (quotes, brackets, punctuation).
_EDGE_PUNCTUATION = " \t\r\n\"'`.,;:!?()[]{}<>«»“”‘’…-–—_/\\*#@&|~^"


class ConceptFileError(ValueError):
    """A concept file is missing, malformed or inconsistent; the message names the file and the fix."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        super().__init__(f"concept file {path}: {message}")


@dataclass(frozen=True)
class Concept:
    """One validated concept keyword list."""

    id: str  # file stem: the {concept} wildcard
    name: str
    description: str
    case: str  # "insensitive" | "sensitive"
    keywords: tuple[str, ...]
    homographs: dict[str, str] = field(default_factory=dict)  # keyword -> its other sense
    include_homographs: bool = False
    category: str | None = None
    source: str | None = None
    path: Path | None = None

    def record(self) -> dict:
        """The parts of the concept its targets depend on (hashed into their provenance)."""
        return {"id": self.id, "name": self.name, "case": self.case, "keywords": list(self.keywords),
                "homographs": sorted(self.homographs), "include_homographs": self.include_homographs}

    def fold(self, word: str) -> str:
        """The form a word is compared in under this concept's case rule."""
        return word.casefold() if self.case == "insensitive" else word

    @property
    def matching_keywords(self) -> tuple[str, ...]:
        """Keywords that count as matches: all, minus homographs unless the concept opts in."""
        if self.include_homographs:
            return self.keywords
        return tuple(keyword for keyword in self.keywords if keyword not in self.homographs)

    def keyword_lookup(self, include_homographs: bool | None = None) -> dict[str, str]:
        """Folded keyword -> keyword as written, for the keywords that count as matches."""
        use_all = self.include_homographs if include_homographs is None else include_homographs
        chosen = self.keywords if use_all else self.matching_keywords
        return {self.fold(keyword): keyword for keyword in chosen}

    def match(self, word: str) -> str | None:
        """The keyword a rebuilt word matches as a whole word (None if none)."""
        return self.keyword_lookup().get(self.fold(normalise_word(word)))


def normalise_word(word: str) -> str:
    """A rebuilt word with surrounding whitespace and punctuation removed ('"Cat,"' -> 'Cat'); case kept."""
    return word.strip(_EDGE_PUNCTUATION)


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ConceptFileError(path, message)


def _string_list(value, path: Path, key: str) -> list[str]:
    _require(isinstance(value, list), path, f"'{key}' must be a YAML list of words, got {type(value).__name__}")
    for position, entry in enumerate(value):
        _require(isinstance(entry, str) and entry.strip() != "", path,
                 f"'{key}[{position}]' must be a non-empty string, got {entry!r} (quote words YAML reads as "
                 "other types, e.g. 'yes', 'no', 'null')")
    return list(value)


def _homographs(value, path: Path) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {word: "" for word in _string_list(value, path, "homographs")}
    _require(isinstance(value, dict), path,
             "'homographs' must be a list of keywords or a mapping keyword -> other sense")
    for word, sense in value.items():
        _require(isinstance(word, str) and isinstance(sense, (str, type(None))), path,
                 f"'homographs' entry {word!r}: {sense!r} must map a keyword to a short description of its other sense")
    return {word: sense or "" for word, sense in value.items()}


def concept_from_mapping(data, path: str | Path) -> Concept:
    """Validate a parsed concept file; errors name `path` and the offending key."""
    path = Path(path)
    _require(isinstance(data, dict), path, f"must hold a YAML mapping with keys {', '.join(REQUIRED_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    _require(not missing, path, f"missing required key(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS), key=str)
    _require(not unknown, path, f"unknown key(s) {', '.join(map(str, unknown))} "
                                f"(allowed: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    _require(CONCEPT_ID.match(path.stem) is not None, path,
             "the file name (the concept id in result paths) may hold only letters, digits, '_' and '-'")
    for key in ("name", "description"):
        _require(isinstance(data[key], str) and data[key].strip() != "", path, f"'{key}' must be a non-empty string")
    _require(data["case"] in CASE_RULES, path, f"'case' must be one of {', '.join(CASE_RULES)}, got {data['case']!r}")
    keywords = _string_list(data["keywords"], path, "keywords")
    _require(len(keywords) > 0, path, "'keywords' is empty; list at least one word")
    spaced = [word for word in keywords if re.search(r"\s", word.strip()) or word != word.strip()]
    _require(not spaced, path, f"keywords must be single words without spaces: {spaced} (a concept matches whole "
                               "words rebuilt from tokens, so a multi-word phrase can never match)")
    edged = [word for word in keywords if normalise_word(word) != word]
    _require(not edged, path, f"keywords must not start or end with punctuation: {edged}")
    fold = (lambda word: word.casefold()) if data["case"] == "insensitive" else (lambda word: word)
    seen: dict[str, str] = {}
    duplicates = []
    for word in keywords:
        if fold(word) in seen:
            duplicates.append(word if word == seen[fold(word)] else f"{seen[fold(word)]}/{word}")
        seen.setdefault(fold(word), word)
    _require(not duplicates, path, f"duplicate keywords under case: {data['case']}: {duplicates}; remove them")
    homographs = _homographs(data.get("homographs"), path)
    strays = sorted(set(homographs) - set(keywords))
    _require(not strays, path, f"'homographs' lists words that are not keywords: {strays}")
    include = data.get("include_homographs", False)
    _require(isinstance(include, bool), path, f"'include_homographs' must be true or false, got {include!r}")
    for key in ("category", "source"):
        value = data.get(key)
        _require(value is None or (isinstance(value, str) and value.strip() != ""), path,
                 f"'{key}' must be a non-empty string, got {value!r}")
    category = data.get("category")
    return Concept(id=path.stem, name=data["name"].strip(), description=data["description"].strip(),
                   case=data["case"], keywords=tuple(keywords), homographs=homographs,
                   include_homographs=include, category=category, source=data.get("source"), path=path)


def load_concept(path: str | Path) -> Concept:
    """Read and validate one concept file."""
    path = Path(path)
    _require(path.is_file(), path, "does not exist (check semantic.concepts in the config)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConceptFileError(path, f"is not valid YAML: {exc}") from exc
    return concept_from_mapping(data, path)


def concept_root(patterns: Iterable[str], workdir: str | Path, workflow_dir: str | Path | None) -> Path:
    """Where relative `semantic.concepts` patterns are read from: the working directory, or the workflow
    directory when some relative pattern matches nothing in the working directory (so the shipped
    `configs/concepts/...` lists work from any working directory)."""
    workdir = Path(workdir)
    if workflow_dir is not None and any(not Path(p).is_absolute() and not glob.glob(str(workdir / p))
                                        for p in patterns):
        return Path(workflow_dir)
    return workdir


def concept_paths(patterns: Iterable[str], root: str | Path | None = None) -> dict[str, Path]:
    """Concept id -> file for the glob patterns of `semantic.concepts` (relative to `root`)."""
    root = Path(root) if root is not None else Path.cwd()
    found: dict[str, Path] = {}
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            raise ConceptFileError(pattern, "matches no file (config key semantic.concepts)")
        for match in matches:
            path = Path(match)
            if path.stem in found and found[path.stem] != path:
                raise ConceptFileError(path, f"has the same concept id '{path.stem}' as {found[path.stem]}; "
                                             "rename one file (ids are file stems and name result paths)")
            found[path.stem] = path
    return found


def load_concepts(patterns: Iterable[str], root: str | Path | None = None) -> dict[str, Concept]:
    """Every concept of the `semantic.concepts` patterns, validated, keyed by id."""
    return {concept_id: load_concept(path) for concept_id, path in concept_paths(patterns, root).items()}


def concept_overlaps(concepts: Iterable[Concept]) -> list[dict]:
    """Keywords shared by two concepts (compared case-insensitively), one record per overlapping pair."""
    concepts = list(concepts)
    overlaps = []
    for i, first in enumerate(concepts):
        folded_first = {word.casefold(): word for word in first.keywords}
        for second in concepts[i + 1:]:
            shared = sorted(folded_first[word.casefold()] for word in second.keywords
                            if word.casefold() in folded_first)
            if shared:
                overlaps.append({"a": first.id, "b": second.id, "shared": shared,
                                 "a_subset_of_b": len(shared) == len(first.keywords),
                                 "b_subset_of_a": len(shared) == len(second.keywords)})
    return overlaps
