"""LM and SAE loaders, offline, on tiny random checkpoints in the formats users download.

Builders here (also used by test_activations.py): a GPT-NeoX (Pythia-architecture) HF checkpoint
directory, the HF cache layout of `EleutherAI/pythia-70m`, sae-lens SAE directories, and sparsify
checkpoints (`cfg.json` + `sae.safetensors` per `layers.L` folder) written exactly as sparsify writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featsim.errors import ConfigError
from rehearsal import hub_fixtures as hub

WORDS = [f"w{i}" for i in range(40)]
D_MODEL, N_LAYERS = 32, 3


# ---------------------------------------------------------------- builders


def word_tokenizer(words=WORDS, bos="<|endoftext|>", eos="<|endoftext|>", pad=None):
    """A word-level fast tokenizer; default specials as GPT-NeoX/Pythia (BOS = EOS, no PAD)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(t for t in ("<unk>", bos, eos, pad) if t))
    vocab = {token: i for i, token in enumerate(specials + list(words))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token=bos, eos_token=eos,
                                   pad_token=pad)


def build_neox_checkpoint(out_dir: Path, tokenizer=None, seed: int = 0) -> Path:
    """A tiny random GPTNeoXForCausalLM (Pythia architecture; d_mlp 64, not 4 d_model) saved as a HF checkpoint."""
    return hub.build_neox(out_dir, tokenizer or word_tokenizer(), hidden=D_MODEL, layers=N_LAYERS, heads=4,
                          seed=seed, intermediate=64, max_positions=64)


def install_in_hf_cache(hub_cache: Path, repo_id: str, source_dir: Path) -> Path:
    """A model repo in the HF hub cache layout (blobs, snapshot symlinks, refs/main); returns the snapshot."""
    return hub.install_repo(hub_cache, repo_id, source_dir)


def identity_topk_sae(d_in: int, hook_name: str, seed: int = 0):
    """A TopK SAE (d_sae = 2 d_in, k = d_in) that reconstructs its input exactly: FVU 0 at any hook.

    W_enc = [I, -I] after a random rotation, so the code of x is (|s|, split by sign) with s = R(x - b_dec).
    """
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=generator))
    cfg = TopKSAEConfig(d_in=d_in, d_sae=2 * d_in, k=d_in, metadata=SAEMetadata(hook_name=hook_name))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([rotation.T, -rotation.T], dim=1))
        sae.W_dec.copy_(torch.cat([rotation, -rotation], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.randn(d_in, generator=generator) * 0.1)
    return sae


def random_topk_sae(d_in: int, d_sae: int, k: int, hook_name: str, seed: int = 0):
    """A TopK SAE with random weights (large FVU on any input)."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    generator = torch.Generator().manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook_name)))
    with torch.no_grad():
        for param in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return sae


def save_sae(sae, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    sae.save_model(str(out_dir))
    return out_dir


def write_sparsify_checkpoint(folder: Path, d_in: int, num_latents: int, k: int, seed: int = 0) -> dict:
    """A sparsify SparseCoder checkpoint as sparsify's save_to_disk writes it; returns its numpy weights."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    weights = {
        "encoder.weight": rng.normal(size=(num_latents, d_in)).astype(np.float32),  # nn.Linear(d_in, latents)
        "encoder.bias": rng.normal(scale=0.1, size=num_latents).astype(np.float32),
        "W_dec": rng.normal(size=(num_latents, d_in)).astype(np.float32),  # [num_latents, d_in]
        "b_dec": rng.normal(scale=0.5, size=d_in).astype(np.float32),
    }
    weights["W_dec"] /= np.linalg.norm(weights["W_dec"], axis=1, keepdims=True)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": num_latents // d_in, "normalize_decoder": True,
           "num_latents": num_latents, "k": k, "multi_topk": False, "skip_connection": False, "transcode": False,
           "d_in": d_in}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return weights


def sparsify_encode_numpy(x: np.ndarray, weights: dict, k: int) -> np.ndarray:
    """sparsify's encode written plainly: top-k of ReLU(W_enc (x - b_dec) + b_enc), as a dense [n, latents]."""
    pre = np.maximum((x - weights["b_dec"]) @ weights["encoder.weight"].T + weights["encoder.bias"], 0.0)
    codes = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    np.put_along_axis(codes, top, np.take_along_axis(pre, top, axis=1), axis=1)
    return codes


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    return build_neox_checkpoint(tmp_path_factory.mktemp("neox") / "tiny-pythia")


def hf_hidden_states(checkpoint: Path, tokens: torch.Tensor):
    """Residual streams from plain transformers: hidden_states[i] = input of block i (i < n_layers)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    with torch.no_grad():
        return model(tokens, output_hidden_states=True).hidden_states


# ---------------------------------------------------------------- LM loaders


def _resid_post(lm, tokens, layer):
    from featsim.lm import capture_hooks

    hook = f"blocks.{layer}.hook_resid_post"
    return capture_hooks(lm, tokens, [hook], lambda act: act)[hook]


def test_local_checkpoint_loads_offline_and_matches_hf_hidden_states(neox_dir, tmp_path):
    from featsim.lm import LMSpec, load_lm

    lm = load_lm(LMSpec.from_config("A", {"source": "local", "path": str(neox_dir)}, device="cpu"), tmp_path)
    tokens = torch.randint(0, len(WORDS), (2, 12))
    hidden = hf_hidden_states(neox_dir, tokens)
    assert lm.cfg.n_layers == N_LAYERS
    for layer in range(N_LAYERS - 1):  # the last hidden state has the final norm applied
        torch.testing.assert_close(_resid_post(lm, tokens, layer), hidden[layer + 1], atol=1e-5, rtol=1e-5)


def test_hf_official_name_loads_from_cache_offline(neox_dir, hub_cache, tmp_path):
    from featsim.lm import LMSpec, load_lm

    install_in_hf_cache(hub_cache, "EleutherAI/pythia-70m", neox_dir)
    lm = load_lm(LMSpec.from_config("A", {"source": "hf", "name": "pythia-70m"}, device="cpu"), tmp_path)
    tokens = torch.randint(0, len(WORDS), (2, 12))
    hidden = hf_hidden_states(neox_dir, tokens)
    torch.testing.assert_close(_resid_post(lm, tokens, 1), hidden[2], atol=1e-5, rtol=1e-5)


def test_local_checkpoint_with_architecture_uses_hooked_transformer(neox_dir, hub_cache, tmp_path):
    from transformer_lens import HookedTransformer

    from featsim.lm import LMSpec, load_lm

    install_in_hf_cache(hub_cache, "EleutherAI/pythia-70m", neox_dir)  # the official config must be cached
    spec = LMSpec.from_config("A", {"source": "local", "path": str(neox_dir), "architecture": "pythia-70m"}, device="cpu")
    lm = load_lm(spec, tmp_path)
    assert isinstance(lm, HookedTransformer)
    tokens = torch.randint(0, len(WORDS), (1, 9))
    torch.testing.assert_close(_resid_post(lm, tokens, 0), hf_hidden_states(neox_dir, tokens)[1], atol=1e-5, rtol=1e-5)


def test_lm_errors_name_the_config_key(tmp_path, hub_cache):
    from featsim.lm import LMSpec, load_lm

    with pytest.raises(ConfigError) as err:
        LMSpec.from_config("B", {"source": "onnx"})
    assert err.value.key == "models.B.lm.source"
    with pytest.raises(ConfigError) as err:
        load_lm(LMSpec.from_config("B", {"source": "local", "path": str(tmp_path)}, device="cpu"), tmp_path)
    assert err.value.key == "models.B.lm.path"
    with pytest.raises(ConfigError) as err:
        load_lm(LMSpec.from_config("B", {"source": "hf", "name": "no-such-model-xyz"}, device="cpu"), tmp_path)
    assert err.value.key == "models.B.lm.name"
    with pytest.raises(ConfigError) as err:  # official, but not in the (empty) cache and offline
        load_lm(LMSpec.from_config("B", {"source": "hf", "name": "pythia-160m"}, device="cpu"), tmp_path)
    assert err.value.key == "models.B.lm.name"


def test_capture_stops_after_the_deepest_requested_hook(neox_dir, tmp_path):
    from featsim.lm import LMSpec, capture_hooks, load_lm

    lm = load_lm(LMSpec.from_config("A", {"source": "local", "path": str(neox_dir)}, device="cpu"), tmp_path)
    fired = []
    with lm.hooks(fwd_hooks=[(f"blocks.{i}.hook_resid_pre", lambda act, hook, i=i: fired.append(i))
                             for i in range(N_LAYERS)]):
        captured = capture_hooks(lm, torch.zeros(1, 4, dtype=torch.long),
                                 ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], lambda a: a)
    assert sorted(captured) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert fired == [0, 1]  # block 2 never ran


# ---------------------------------------------------------------- SAE loaders


def test_local_sae_directory_loads_with_its_hook(tmp_path):
    from featsim.saes import SAESpec, load_sae, sae_info

    sae = random_topk_sae(D_MODEL, 64, 4, "blocks.1.hook_resid_post")
    save_sae(sae, tmp_path / "saes" / "L1")
    spec = SAESpec.from_config("A", {"source": "local", "path": str(tmp_path / "saes" / "L{layer}")})
    info = sae_info(spec, 1, tmp_path)
    assert (info.hook_name, info.d_in, info.d_sae, info.architecture) == ("blocks.1.hook_resid_post", D_MODEL, 64, "topk")
    loaded, _ = load_sae(spec, 1, tmp_path)
    x = torch.randn(5, D_MODEL)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    with pytest.raises(ConfigError) as err:
        sae_info(spec, 2, tmp_path)
    assert err.value.key == "models.A.sae.path"


def test_toy_sae_uses_the_local_code_path(tmp_path):
    from featsim.saes import SAESpec, sae_info

    save_sae(random_topk_sae(D_MODEL, 64, 4, "blocks.0.hook_resid_post"), tmp_path / "toy" / "sae" / "A" / "L0")
    info = sae_info(SAESpec.from_config("A", {"source": "toy"}), 0, tmp_path)
    assert info.hook_name == "blocks.0.hook_resid_post" and info.ids["path"].endswith("toy/sae/A/L0")


def test_sae_lens_repo_release_loads_from_hf_cache(tmp_path, hub_cache):
    from featsim.saes import SAESpec, load_sae, sae_info

    repo_src = tmp_path / "repo"
    sae = random_topk_sae(D_MODEL, 48, 4, "blocks.2.hook_resid_post", seed=3)
    save_sae(sae, repo_src / "blocks.2.hook_resid_post")
    install_in_hf_cache(hub_cache, "someone/tiny-saes", repo_src)
    spec = SAESpec.from_config("A", {"source": "sae_lens", "release": "someone/tiny-saes",
                                     "id": "blocks.{layer}.hook_resid_post"})
    assert sae_info(spec, 2, tmp_path).hook_name == "blocks.2.hook_resid_post"
    loaded, info = load_sae(spec, 2, tmp_path)
    assert info.ids == {"release": "someone/tiny-saes", "id": "blocks.2.hook_resid_post"}
    x = torch.randn(4, D_MODEL)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    with pytest.raises(ConfigError) as err:  # not in the cache (offline): names the id template
        sae_info(spec, 1, tmp_path)
    assert err.value.key == "models.A.sae.id"


def test_unknown_sae_lens_id_names_the_key(tmp_path):
    from featsim.saes import SAESpec, sae_info

    spec = SAESpec.from_config("B", {"source": "sae_lens", "release": "gemma-scope-2b-pt-res-canonical",
                                     "id": "layer_{layer}/width_16k/canonical"})
    with pytest.raises(ConfigError) as err:
        sae_info(spec, 99, tmp_path)
    assert err.value.key == "models.B.sae.id" and "layer_99/width_16k/canonical" in str(err.value)
    with pytest.raises(ConfigError) as err:
        sae_info(SAESpec.from_config("B", {"source": "sae_lens", "release": "no-such-release", "id": "x"}), 0, tmp_path)
    assert err.value.key == "models.B.sae.release"


@pytest.mark.parametrize("where", ["local_repo", "hf_cache"])
def test_sparsify_checkpoint_encodes_like_sparsify(where, tmp_path, hub_cache):
    from featsim.saes import SAESpec, load_sae, sae_info

    repo_src = tmp_path / "sae-pythia-70m-32k"
    weights = write_sparsify_checkpoint(repo_src / "layers.1", D_MODEL, 96, k=6)
    if where == "hf_cache":
        install_in_hf_cache(hub_cache, "EleutherAI/sae-pythia-70m-32k", repo_src)
        repo = "EleutherAI/sae-pythia-70m-32k"
    else:
        repo = str(repo_src)
    spec = SAESpec.from_config("A", {"source": "sparsify", "repo": repo, "hookpoint": "layers.{layer}"})
    info = sae_info(spec, 1, tmp_path)
    assert (info.hook_name, info.d_in, info.d_sae) == ("blocks.1.hook_resid_post", D_MODEL, 96)
    sae, _ = load_sae(spec, 1, tmp_path)
    x = np.random.default_rng(1).normal(size=(20, D_MODEL)).astype(np.float32)
    codes = sae.encode(torch.as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(codes, sparsify_encode_numpy(x, weights, 6), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae.W_dec.detach().numpy(), weights["W_dec"])  # [num_latents, d_in], as stored
    with pytest.raises(ConfigError) as err:
        sae_info(spec, 4, tmp_path)
    assert err.value.key == "models.A.sae.hookpoint"


def test_legacy_layer_offset_hook():
    from featsim.saes import feed_hook

    assert feed_hook("blocks.3.hook_resid_post", False) == "blocks.3.hook_resid_post"
    assert feed_hook("blocks.3.hook_resid_post", True) == "blocks.2.hook_resid_post"
    assert feed_hook("blocks.0.hook_resid_post", True) == "blocks.0.hook_resid_pre"
    with pytest.raises(ConfigError) as err:
        feed_hook("blocks.3.hook_mlp_out", True)
    assert err.value.key == "legacy.layer_offset"


@pytest.mark.parametrize("source", ["hf", "local"])
def test_weight_processing_from_sae_metadata_is_applied(source, neox_dir, hub_cache, tmp_path):
    """An SAE trained with center_writing_weights sees the HF residual minus its mean over d_model."""
    from featsim.lm import LMSpec, load_lm, processing_kwargs

    install_in_hf_cache(hub_cache, "EleutherAI/pythia-70m", neox_dir)
    lm_config = {"source": "hf", "name": "EleutherAI/pythia-70m"} if source == "hf" else {"source": "local", "path": str(neox_dir)}
    processing = processing_kwargs({"center_writing_weights": True, "fold_ln": False, "n_devices": 1}, "k")
    assert processing == {"center_writing_weights": True} and processing_kwargs({"fold_ln": False}, "k") == {}
    lm = load_lm(LMSpec.from_config("A", lm_config, device="cpu"), tmp_path, processing)
    tokens = torch.randint(0, len(WORDS), (2, 10))
    hidden = hf_hidden_states(neox_dir, tokens)[2]
    torch.testing.assert_close(_resid_post(lm, tokens, 1), hidden - hidden.mean(-1, keepdim=True), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- configs/gpt2-vs-pythia-160m.yaml (issue 15)


def test_gpt2_small_res_jb_release_loads_from_hf_cache_offline(tmp_path, hub_cache):
    """The registry release of configs/gpt2-vs-pythia-160m.yaml, from its real repo in the pre-sae-lens-6 format."""
    from featsim.saes import SAESpec, load_sae, sae_info

    rng = np.random.default_rng(4)
    weights = {"W_enc": rng.normal(size=(D_MODEL, 40)).astype(np.float32),
               "b_enc": rng.normal(scale=0.1, size=40).astype(np.float32),
               "W_dec": rng.normal(size=(40, D_MODEL)).astype(np.float32),
               "b_dec": rng.normal(scale=0.5, size=D_MODEL).astype(np.float32)}
    repo_src = tmp_path / "GPT2-Small-SAEs-Reformatted"
    hub.write_sae_lens_pre6(repo_src / "blocks.4.hook_resid_pre", weights, "blocks.4.hook_resid_pre", 4, "gpt2-small")
    install_in_hf_cache(hub_cache, "jbloom/GPT2-Small-SAEs-Reformatted", repo_src)
    spec = SAESpec.from_config("gpt2", {"source": "sae_lens", "release": "gpt2-small-res-jb",
                                        "id": "blocks.{layer}.hook_resid_pre"})
    info = sae_info(spec, 4, tmp_path)
    assert (info.hook_name, info.d_in, info.d_sae) == ("blocks.4.hook_resid_pre", D_MODEL, 40)
    sae, _ = load_sae(spec, 4, tmp_path)
    x = rng.normal(size=(12, D_MODEL)).astype(np.float32)
    expected = np.maximum((x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"], 0.0)  # ReLU SAE
    np.testing.assert_allclose(sae.encode(torch.as_tensor(x)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError) as err:  # a layer whose folder is not in the cache: names the id template
        sae_info(spec, 6, tmp_path)
    assert err.value.key == "models.gpt2.sae.id"


def test_sae_pythia_160m_32k_loads_from_hf_cache_offline(tmp_path, hub_cache):
    """The sparsify repo of configs/gpt2-vs-pythia-160m.yaml, in sparsify's save format and the hub cache layout."""
    from featsim.saes import SAESpec, load_sae, sae_info

    repo_src = tmp_path / "sae-pythia-160m-32k"
    weights = write_sparsify_checkpoint(repo_src / "layers.3", D_MODEL, 64, k=5, seed=2)
    install_in_hf_cache(hub_cache, "EleutherAI/sae-pythia-160m-32k", repo_src)
    spec = SAESpec.from_config("pythia160m", {"source": "sparsify", "repo": "EleutherAI/sae-pythia-160m-32k",
                                              "hookpoint": "layers.{layer}"})
    assert sae_info(spec, 3, tmp_path).hook_name == "blocks.3.hook_resid_post"
    sae, _ = load_sae(spec, 3, tmp_path)
    x = np.random.default_rng(5).normal(size=(16, D_MODEL)).astype(np.float32)
    np.testing.assert_allclose(sae.encode(torch.as_tensor(x)).detach().numpy(), sparsify_encode_numpy(x, weights, 5),
                               rtol=1e-5, atol=1e-5)
