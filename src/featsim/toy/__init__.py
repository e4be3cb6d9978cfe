"""The offline toy route: a story corpus with known concept categories, a word-level tokenizer,
small transformer-lens LMs and sae-lens TopK SAEs trained here, so the default config has known answers.

Submodules: `corpus` (stories + ground truth), `tokenizer`, `lm`, `sae`, `concepts` (concept files).
They are imported on demand because `lm`/`sae` pull in torch, transformer-lens and sae-lens.
"""
