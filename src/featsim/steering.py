"""Steering a language model: add alpha * v at one hook and read the change of the next-token distribution.

`Steerer` holds one model, one hook (TransformerLens names, e.g. `blocks.1.hook_resid_post`) and a fixed
batch of prompts; `Steerer.effects` steers with many vectors at once (vectors x prompts stacked in the batch
dimension) and reduces each steered run to the effect measures of issue #14, at the prompt's last position
(the next token the prompt predicts):

- the effect signature: log p_steered(t) - log p_clean(t) over the vocabulary, per prompt;
- KL(p_clean || p_steered), averaged over prompts;
- the change of the log probability mass of a keyword token set (a concept's keywords), averaged over prompts;
- the agreement with a reference signature: Pearson correlation over the vocabulary per prompt, averaged;
- the specific agreement: the same correlation after whitening each side's signatures by the second moment
  of its random-direction signatures (same hook, same alpha; `Whitener`): the effects of any steering
  vector live in a few dominant vocabulary directions, where unrelated vectors correlate by chance;
- optionally (readouts: a later hook and its SAE encoder), the response of each latent of that SAE: the mean
  over prompts of |code_steered - code_clean| at the last position, read in the same forward pass.

Positions: `"last"` steers the last prompt position only; an integer k steers every position from k on. When
only the last position is steered at a residual-stream hook of a HookedTransformer, the earlier positions
are unchanged (causal attention), so the steered pass runs just that position through the remaining blocks
against a key/value cache of the clean prefix: the same numbers as a full pass, at a fraction of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from featsim.errors import ConfigError

from featsim.steering_config import POSITIONS_LAST, steered_positions


# ---------------------------------------------------------------- prompts and keyword tokens


def heldout_prompts(tokens: np.ndarray, mask: np.ndarray, heldout: np.ndarray, n_prompts: int, prompt_length: int,
                    seed: int) -> np.ndarray:
    """int64 [n, prompt_length]: the first tokens of up to `n_prompts` held-out sequences, seeded choice.

    A sequence qualifies when its last prompt position is a data token (unmasked): right-padded rows and
    rows ending in a document boundary there are skipped.
    """
    tokens, mask = np.asarray(tokens), np.asarray(mask, dtype=bool)
    if prompt_length > tokens.shape[1]:
        raise ConfigError("steering.prompt_length", f"{prompt_length} exceeds data.context_length = {tokens.shape[1]}")
    eligible = np.flatnonzero(np.asarray(heldout, dtype=bool) & mask[:, prompt_length - 1])
    if eligible.size == 0:
        raise ConfigError("steering.prompt_length", "no held-out sequence has a data token at the last prompt "
                                                    "position; shorten the prompts or hold out more sequences")
    chosen = np.sort(np.random.default_rng([seed, 0x57EE]).permutation(eligible)[:n_prompts])
    return tokens[chosen, :prompt_length].astype(np.int64)


def token_word(tokenizer, token: str) -> str:
    """The text a single vocabulary token stands for (BPE/sentencepiece space markers removed)."""
    return tokenizer.convert_tokens_to_string([token]).strip()


def keyword_token_ids(tokenizer, concept) -> np.ndarray:
    """Sorted vocabulary ids of the tokens that are, as a whole word, a keyword of `concept` (its case and
    homograph rules). Keywords split into several tokens have no such token and do not count."""
    ids = [index for token, index in tokenizer.get_vocab().items() if concept.match(token_word(tokenizer, token))]
    return np.asarray(sorted(ids), dtype=np.int64)


# ---------------------------------------------------------------- effect measures


@dataclass
class Effects:
    """Per steering vector, the prompt-averaged effect measures (see module docstring)."""

    kl: np.ndarray  # [n_vectors]
    keyword_mass: np.ndarray  # [n_vectors, n_keyword_sets]
    agreement: np.ndarray | None = None  # [n_vectors] vs one reference signature, [n_vectors, n_refs] vs several
    signatures: np.ndarray | None = None  # [n_vectors, n_prompts, d_vocab] when kept
    specific_agreement: np.ndarray | None = None  # like `agreement`, of the whitened signatures
    responses: dict | None = None  # readout hook -> [n_vectors, d_sae]: mean |delta code| at the last position


def _agreements(signatures: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """[n, P, V] signatures with [R, P, V] references -> [n, R]: per prompt the Pearson correlation over the
    vocabulary, averaged over prompts (NaN when a row is constant), without an [n, R, P, V] intermediate."""
    def standardised(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=-1, keepdim=True)
        norm = x.norm(dim=-1, keepdim=True)
        return torch.where(norm > 0, x / norm.clamp_min(1e-30), torch.full_like(x, math.nan))

    return torch.einsum("npv,rpv->nrp", standardised(signatures), standardised(references)).mean(dim=-1)


WHITENING_RIDGE = 0.01
"""Ridge of the whitening, relative to the largest eigenvalue of the random-direction second moment: the
directions random vectors barely move keep a bounded weight (chosen on the toy from 0.003 / 0.01 / 0.03)."""


class Whitener:
    """Per prompt, the map s -> (C + ridge I)^(-1/2) s of vocabulary-centred signatures, C the second moment
    of the signatures of random directions of the same norm at one hook and alpha. Built once from
    independent random directions, it is a fixed linear map: an agreement of whitened signatures is a fixed
    function of each signature, so a permutation p computed from it stays valid."""

    def __init__(self, random_signatures: np.ndarray | torch.Tensor, ridge: float = WHITENING_RIDGE):
        x = torch.as_tensor(np.asarray(random_signatures), dtype=torch.float64)  # [n, P, V]
        if x.ndim != 3 or x.shape[0] < 2:
            raise ValueError(f"whitening needs [n >= 2, P, V] random-direction signatures, got {tuple(x.shape)}")
        x = (x - x.mean(dim=-1, keepdim=True)).permute(1, 0, 2)  # [P, n, V]
        _, singular, basis = torch.linalg.svd(x, full_matrices=False)  # basis [P, r, V]
        eigen = singular ** 2 / x.shape[1]  # eigenvalues of C = X^T X / n, [P, r]
        floor = ridge * eigen.max(dim=-1, keepdim=True).values
        if not torch.all(floor > 0):
            raise ValueError("random directions did not move the next-token distribution: nothing to whiten by")
        self.basis = basis.float()
        self.gain = ((eigen + floor) ** -0.5 - floor ** -0.5).float()  # on the basis, beyond the flat part
        self.flat = (floor ** -0.5).float()  # [P, 1]: every other direction

    def __call__(self, signatures: torch.Tensor) -> torch.Tensor:
        """[..., P, V] signatures -> whitened, vocabulary-centred, same shape."""
        basis, gain, flat = (t.to(signatures.device) for t in (self.basis, self.gain, self.flat))
        centred = signatures - signatures.mean(dim=-1, keepdim=True)
        coefficients = torch.einsum("...pv,prv->...pr", centred, basis) * gain
        return flat * centred + torch.einsum("...pr,prv->...pv", coefficients, basis)


def agreement_matrix(signatures_rows: np.ndarray, signatures_cols: np.ndarray) -> np.ndarray:
    """[n_rows, n_cols]: mean over prompts of the correlation over the vocabulary of every row signature
    [P, V] with every column signature (the agreement of two effects)."""
    rows = torch.as_tensor(np.asarray(signatures_rows), dtype=torch.float64)
    cols = torch.as_tensor(np.asarray(signatures_cols), dtype=torch.float64)
    return _agreements(rows, cols).numpy()


# ---------------------------------------------------------------- the steered forward pass


def steering_hook(deltas: torch.Tensor, positions: torch.Tensor):
    """A TransformerLens hook adding `deltas[i]` ([batch, d], alpha * v already applied) to batch row i at the
    positions where `positions` ([pos] bool) is true; other dimensions of the hook are flattened into d."""
    def add(activation: torch.Tensor, hook) -> torch.Tensor:
        batch, n_positions = activation.shape[:2]
        flat = activation.reshape(batch, n_positions, -1)
        added = torch.zeros_like(flat)
        added[:, positions] = deltas.to(flat.dtype)[:, None, :]
        return (flat + added).reshape(activation.shape)

    return add


def _block_of(hook: str) -> int:
    """The block index of a `blocks.{i}.` hook; hooks outside the blocks come first (-1) or last (embed / final)."""
    parts = hook.split(".")
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return -1 if hook.startswith(("hook_embed", "hook_pos_embed", "hook_tokens")) else 1 << 30


def _resid_start_layer(hook: str, n_layers: int) -> int | None:
    """The `start_at_layer` whose input is this hook's residual (resid_pre L -> L, resid_post L -> L + 1)."""
    parts = hook.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        layer = int(parts[1])
        if parts[2] == "hook_resid_pre" and layer < n_layers:
            return layer
        if parts[2] == "hook_resid_post" and layer < n_layers:
            return layer + 1
    return None


class Steerer:
    """One model steered at one hook on a fixed prompt batch [P, T]; effects read at the last position."""

    def __init__(self, model, hook: str, prompts: np.ndarray | torch.Tensor, positions: str | int = POSITIONS_LAST,
                 batch_size: int = 4096, fast: bool = True, readouts: Mapping[str, Any] | None = None):
        """`readouts`: later hook -> encoder (a callable from activations [N, d] to SAE codes [N, d_sae]);
        each must sit in a later block than `hook`."""
        self.model, self.hook, self.batch_size = model, hook, int(batch_size)
        self.readouts = dict(readouts or {})
        self.device = next(model.parameters()).device
        self.prompts = torch.as_tensor(prompts, dtype=torch.long, device=self.device)  # [P, T]
        n_prompts, length = self.prompts.shape
        self.positions = torch.as_tensor(steered_positions(length, positions), device=self.device)  # [T]
        if hook not in model.hook_dict:
            raise ConfigError("steering", f"hook {hook!r} is not a hook of this model")
        for later in self.readouts:
            if later not in model.hook_dict or not _block_of(hook) < _block_of(later):
                raise ValueError(f"readout hook {later!r} is not a hook in a block after the steered {hook!r}")
        captured: dict[str, torch.Tensor] = {}

        def keep(activation, hook):
            captured[hook.name] = activation.detach().reshape(n_prompts, length, -1).float()

        with torch.no_grad(), model.hooks(fwd_hooks=[(name, keep) for name in [hook, *self.readouts]]):
            logits = model(self.prompts, return_type="logits")
            self.clean_codes = {name: encoder(captured[name][:, -1]).float()  # [P, d_sae]
                                for name, encoder in self.readouts.items()}
        self.clean_logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # [P, V]
        activation = captured[hook]  # [P, T, d]
        self.width = int(activation.shape[-1])
        self.activation_norm = float(activation[:, self.positions].norm(dim=-1).mean())
        start = _resid_start_layer(hook, model.cfg.n_layers) if hasattr(model, "cfg") else None
        self._fast = (fast and start is not None and positions == POSITIONS_LAST and length > 1
                      and type(model).__name__ == "HookedTransformer")
        if self._fast:
            self._start_layer = start
            self._last_residual = activation[:, -1]  # [P, d]
            self._prefix_cache = self._clean_prefix_cache() if start < model.cfg.n_layers else None
            self._tiling: tuple = (0, [], None)  # (copies, [(keys, values)], mask): see _tiled_cache
            if self.readouts:  # clean codes through the same cached arithmetic: a zero vector moves nothing
                readout: dict[str, torch.Tensor] = {}
                self._steered(torch.zeros((1, self.width), device=self.device), 0.0, readout)
                with torch.no_grad():
                    self.clean_codes = {name: encoder(readout[name]).float() for name, encoder in self.readouts.items()}

    @property
    def n_prompts(self) -> int:
        return int(self.prompts.shape[0])

    def _clean_prefix_cache(self):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(self.model.cfg, self.device, self.n_prompts)
        with torch.no_grad():
            # prompts hold no padding: an explicit all-ones mask (else transformer-lens infers one from pad ids)
            prefix = self.prompts[:, :-1]
            self.model(prefix, past_kv_cache=cache, attention_mask=torch.ones_like(prefix), return_type=None)
        return cache

    def _tiled_cache(self, copies: int):
        """The clean prefix cache repeated `copies` times along the batch (vector-major), frozen. The largest
        tiling so far is kept and smaller ones are views of its first rows (a chunk's tail costs no copy)."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        if self._tiling[0] < copies:
            tiled = [(entry.past_keys.repeat(copies, 1, 1, 1), entry.past_values.repeat(copies, 1, 1, 1))
                     for entry in self._prefix_cache.entries]
            self._tiling = (copies, tiled, self._prefix_cache.previous_attention_mask.repeat(copies, 1))
        _, tiled, mask = self._tiling
        rows = copies * self.n_prompts
        entries = [TransformerLensKeyValueCacheEntry(keys[:rows], values[:rows], frozen=True) for keys, values in tiled]
        return TransformerLensKeyValueCache(entries, mask[:rows], frozen=True)

    def steered_logprobs(self, vectors: torch.Tensor, alpha: float) -> torch.Tensor:
        """log p_steered at the last position, [n_vectors, P, V], for vectors [n, d] (one chunk: no batching)."""
        return self._steered(vectors, alpha, {})

    def _steered(self, vectors: torch.Tensor, alpha: float, readout: dict) -> torch.Tensor:
        """`steered_logprobs`; with readouts, fills `readout` with each readout hook's activation at the last
        position, [n_vectors * P, d] (vector-major)."""
        n_vectors = int(vectors.shape[0])
        deltas = (float(alpha) * vectors.to(self.device, torch.float32)).repeat_interleave(self.n_prompts, dim=0)

        def keep(activation, hook):
            readout[hook.name] = activation[:, -1].reshape(activation.shape[0], -1).float()

        with torch.no_grad(), self.model.hooks(fwd_hooks=[(name, keep) for name in self.readouts]):
            if self._fast:
                residual = self._last_residual.repeat(n_vectors, 1) + deltas  # [n*P, d]
                blocks_left = self._start_layer < self.model.cfg.n_layers  # else only the unembedding runs
                logits = self.model(residual[:, None, :].to(self.model.cfg.dtype), start_at_layer=self._start_layer,
                                    past_kv_cache=self._tiled_cache(n_vectors) if blocks_left else None)[:, -1]
            else:
                tokens = self.prompts.repeat(n_vectors, 1)
                with self.model.hooks(fwd_hooks=[(self.hook, steering_hook(deltas, self.positions))]):
                    logits = self.model(tokens, return_type="logits")[:, -1]
        missing = sorted(set(self.readouts) - set(readout))
        if missing:
            raise RuntimeError(f"readout hooks {missing} did not run in the steered pass from {self.hook}")
        return torch.log_softmax(logits.float(), dim=-1).reshape(n_vectors, self.n_prompts, -1)

    def effects(self, vectors: np.ndarray | torch.Tensor, alpha: float, keyword_sets: Iterable[np.ndarray] = (),
                reference: np.ndarray | None = None, keep_signatures: bool = False,
                responses: bool = False, whitening: tuple[Whitener, Whitener] | None = None) -> Effects:
        """Effect measures of steering with each row of `vectors` ([n, d]) at `alpha` (absolute scale).

        `reference`: one signature [P, V] (agreement [n]) or several [R, P, V] (agreement [n, R]);
        `whitening`: (the steered side's, the reference side's) whiteners: also the specific agreement;
        `responses`: also the readout latents' mean |delta code| (needs readouts)."""
        vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32), device=self.device)
        if vectors.ndim != 2 or vectors.shape[1] != self.width:
            raise ValueError(f"steering vectors must be [n, {self.width}] at {self.hook}, got {tuple(vectors.shape)}")
        keyword_sets = [torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device) for ids in keyword_sets]
        clean = self.clean_logprobs
        clean_mass = [torch.logsumexp(clean[:, ids], dim=-1) if ids.numel() else None for ids in keyword_sets]
        ref = torch.as_tensor(reference, dtype=torch.float32, device=self.device) if reference is not None else None
        single = ref is not None and ref.ndim == 2
        if whitening is not None and ref is None:
            raise ValueError("a specific agreement needs a reference signature")
        ref_specific = whitening[1](ref) if whitening is not None else None
        if responses and not self.readouts:
            raise ValueError("responses need readout hooks (Steerer(readouts=...))")
        per_chunk = max(1, self.batch_size // self.n_prompts)
        kl, mass, agreement, specific, signatures = [], [], [], [], []
        moved: dict[str, list] = {name: [] for name in self.readouts} if responses else {}
        for start in range(0, int(vectors.shape[0]), per_chunk):
            readout: dict[str, torch.Tensor] = {}
            steered = self._steered(vectors[start:start + per_chunk], alpha, readout)  # [n, P, V]
            for name in moved:
                codes = self.readouts[name](readout[name]).float()  # [n * P, d_sae]
                delta = codes.reshape(steered.shape[0], self.n_prompts, -1) - self.clean_codes[name]
                moved[name].append(delta.abs().mean(dim=1).cpu())
            signature = steered - clean
            prompt_kl = (clean.exp() * (clean - steered)).sum(dim=-1)  # [n, P]
            kl.append(prompt_kl.mean(dim=1))
            mass.append(torch.stack([
                (torch.logsumexp(steered[..., ids], dim=-1) - base).mean(dim=1) if base is not None
                else torch.full((steered.shape[0],), math.nan, device=self.device)
                for ids, base in zip(keyword_sets, clean_mass)], dim=1) if keyword_sets
                else torch.zeros((steered.shape[0], 0), device=self.device))
            if ref is not None:
                agreement.append(_agreements(signature, ref[None] if single else ref)[:, 0] if single
                                 else _agreements(signature, ref))
            if whitening is not None:
                whitened = whitening[0](signature)
                specific.append(_agreements(whitened, ref_specific[None])[:, 0] if single
                                else _agreements(whitened, ref_specific))
            if keep_signatures:
                signatures.append(signature.cpu())
        return Effects(kl=torch.cat(kl).cpu().numpy().astype(np.float64),
                       keyword_mass=torch.cat(mass).cpu().numpy().astype(np.float64),
                       agreement=torch.cat(agreement).cpu().numpy().astype(np.float64) if ref is not None else None,
                       signatures=torch.cat(signatures).numpy() if keep_signatures else None,
                       specific_agreement=torch.cat(specific).cpu().numpy().astype(np.float64)
                       if whitening is not None else None,
                       responses={name: torch.cat(parts).numpy().astype(np.float64) for name, parts in moved.items()}
                       if responses else None)
