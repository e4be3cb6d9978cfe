"""Tokenizers of the toy corpus, saved as Hugging Face tokenizer dirs: word-level (one token per word, the
corpus tokenizer) and a small subword BPE (a toy LM with a tokenizer of its own, for cross-tokenizer comparisons).

transformer-lens reloads a model's tokenizer by path (`AutoTokenizer.from_pretrained(name_or_path)`),
so the tokenizer must live on disk; `AutoTokenizer.from_pretrained(dir)` works offline.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE, WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.trainers import BpeTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """WordLevel + WhitespaceSplit over `words`; ids 0-3 are <pad> <unk> <bos> <eos>, then `words` in order."""
    if len(set(words)) != len(words) or set(words) & set(SPECIAL_TOKENS):
        raise ValueError(f"tokenizer words must be unique and must not include the special tokens {SPECIAL_TOKENS}")
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, unk_token=UNK,
                                   bos_token=BOS, eos_token=EOS)


def build_bpe_tokenizer(stories: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A subword BPE tokenizer trained on `stories` (deterministic), with the word tokenizer's special tokens.

    Metaspace pre-tokenization marks word starts with "▁" (as SentencePiece does), so merges never cross a
    space and labels can rebuild whole words (featsim.labels.word_rules); with a small `vocab_size` most
    words split into several tokens. Offsets are characters of the story, as the word tokenizer's are.
    """
    backend = Tokenizer(BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    backend.train_from_iterator(stories, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, unk_token=UNK,
                                   bos_token=BOS, eos_token=EOS)


def is_word_level(tokenizer) -> bool:
    """Whether a toy tokenizer maps whitespace-split words to ids directly (the corpus tokenizer)."""
    return type(tokenizer.backend_tokenizer.model).__name__ == "WordLevel"


def load_word_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Reload a saved tokenizer directory (offline)."""
    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer at {path} (expected tokenizer.json); rebuild the toy_corpus target")
    return AutoTokenizer.from_pretrained(str(path))
