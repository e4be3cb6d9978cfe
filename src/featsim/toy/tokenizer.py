"""Word-level tokenizer of the toy corpus (one token per word), saved as a Hugging Face tokenizer dir.

transformer-lens reloads a model's tokenizer by path (`AutoTokenizer.from_pretrained(name_or_path)`),
so the tokenizer must live on disk; `AutoTokenizer.from_pretrained(dir)` works offline.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
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


def load_word_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Reload a saved tokenizer directory (offline)."""
    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer at {path} (expected tokenizer.json); rebuild the toy_corpus target")
    return AutoTokenizer.from_pretrained(str(path))
