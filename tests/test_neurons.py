"""The LLM-neuron baseline (`sae.source: neurons`) on tiny random LMs, against independent oracles.

Oracles: transformer-lens `run_with_cache` of the toy HookedTransformer (`blocks.L.mlp.hook_post`) and its
`blocks[L].mlp.W_out`; for a Hugging Face checkpoint run through TransformerBridge, the input of the HF
`dense_4h_to_h` module (a torch forward pre-hook) and that module's weight; a brute-force numpy
correlation for the correlation engine that dense codes select.
"""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from featsim.errors import ConfigError
from test_correlate import assert_matches_oracle
from test_loaders import build_neox_checkpoint, install_in_hf_cache

N_SEQ, CTX, D_MLP = 4, 10, 48
TOY_WORDS = [f"word{i}" for i in range(30)]


def write_token_store(path, tokenizer, tokenizer_dir, seed=0):
    """tokens.zarr with BOS first (masked) and a padded, masked tail in the last row."""
    from featsim.stores import write_tokens
    from featsim.tokens import vocab_hash

    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, len(tokenizer), size=(N_SEQ, CTX)).astype(np.int32)
    tokens[:, 0] = tokenizer.bos_token_id
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, 0] = False
    mask[-1, 7:] = False
    tokens[-1, 7:] = tokenizer.eos_token_id
    write_tokens(path, tokens, mask, {"tokenizer": str(tokenizer_dir), "vocab_hash": vocab_hash(tokenizer)})
    return tokens, mask


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 2-layer toy HookedTransformer checkpoint of model entry A (d_mlp 48, not 4 * d_model) and tokens."""
    from featsim.toy.lm import build_model, save_toy_lm
    from featsim.toy.tokenizer import build_word_tokenizer

    root = tmp_path_factory.mktemp("neurons")
    tokenizer_dir = root / "tokenizer"
    tokenizer = build_word_tokenizer(TOY_WORDS)
    tokenizer.save_pretrained(str(tokenizer_dir))
    exp_dir = root / "results" / "toy"
    transformer_config = {"d_model": 16, "n_layers": 2, "d_head": 8, "n_heads": 2, "d_mlp": D_MLP, "n_ctx": CTX,
                          "d_vocab": len(tokenizer), "act_fn": "gelu", "normalization_type": "LN", "seed": 0}
    model = build_model(transformer_config, tokenizer_dir)
    save_toy_lm(model, transformer_config, tokenizer_dir, exp_dir / "toy" / "lm" / "A")
    tokens, mask = write_token_store(root / "tokens.zarr", tokenizer, tokenizer_dir)
    return {"exp_dir": exp_dir, "model": model.eval(), "tokens_path": root / "tokens.zarr", "tokens": tokens,
            "mask": mask}


def neuron_codes(tokens_path, exp_dir, out_dir, lm, layers, model="A_neurons", legacy=None):
    """The activations and codes stages of one neurons entry (lm_from A), as the rules call them."""
    from featsim.targets.activations import make_activations
    from featsim.targets.activations import make_codes

    acts = {layer: out_dir / "acts" / f"L{layer}.zarr" for layer in layers}
    make_activations(tokens_path, acts, model, "A", lm, {model: {"sae": {"source": "neurons"}, "layers": layers}},
                     legacy, exp_dir, device="cpu", batch_size=3, ids={"experiment": "e"})
    outputs = {}
    for layer in layers:
        layer_dir = out_dir / f"L{layer}"
        paths = {"out_codes": layer_dir / "codes.zarr", "out_decoder": layer_dir / "decoder.npy",
                 "out_meta": layer_dir / "meta.json"}
        make_codes(acts[layer], model, layer, {"source": "neurons", "max_fvu": 1.0}, "code", legacy or {}, exp_dir,
                   device="cpu", **paths)
        outputs[layer] = {"acts": acts[layer], **paths}
    return outputs


def test_toy_neuron_codes_are_mlp_hook_post_and_the_decoder_is_W_out(toy, tmp_path):
    from featsim.stores import open_acts, open_codes

    outputs = neuron_codes(toy["tokens_path"], toy["exp_dir"], tmp_path, {"source": "toy", "toy": {"seed": 0}}, [0, 1])
    lm, mask = toy["model"], toy["mask"]
    hooks = [f"blocks.{layer}.mlp.hook_post" for layer in (0, 1)]
    with torch.no_grad():
        _, cache = lm.run_with_cache(torch.as_tensor(toy["tokens"], dtype=torch.long), names_filter=hooks)
    for layer, hook in zip((0, 1), hooks):
        out = outputs[layer]
        expected = cache[hook].numpy()[mask]  # [n_unmasked, d_mlp], row-major over tokens.zarr
        assert open_acts(out["acts"]).attrs["hook"] == hook
        codes = open_codes(out["out_codes"])
        assert codes.d_sae == D_MLP and codes.n_tokens == mask.sum()
        np.testing.assert_allclose(codes.to_csr().toarray(), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(np.load(out["out_decoder"]), lm.blocks[layer].mlp.W_out.detach().numpy())
        meta = json.loads(out["out_meta"].read_text())
        assert meta["hook"] == meta["sae_hook"] == hook and meta["sae_source"] == "neurons"
        assert meta["d_in"] == meta["d_sae"] == D_MLP and meta["architecture"] == "mlp_neurons"
        assert meta["lm_owner"] == "A" and meta["lm_source"] == "toy"
        assert meta["quality"]["fvu"] == 0.0 and meta["quality"]["n_tokens"] == mask.sum()
        assert meta["quality"]["mean_l0"] == pytest.approx((expected != 0).sum(1).mean())
        assert codes.attrs["hook"] == hook and codes.attrs["fvu"] == 0.0


def test_hf_checkpoint_neurons_are_the_input_of_dense_4h_to_h(tmp_path):
    """A GPT-NeoX checkpoint through TransformerBridge (lm.source: local); legacy.layer_offset leaves neurons alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from featsim.stores import open_codes

    checkpoint = build_neox_checkpoint(tmp_path / "tiny-pythia")
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    tokens, mask = write_token_store(tmp_path / "tokens.zarr", tokenizer, checkpoint)
    lm = {"source": "local", "path": str(checkpoint)}
    outputs = neuron_codes(tmp_path / "tokens.zarr", tmp_path, tmp_path / "out", lm, [1], legacy={"layer_offset": True})
    hf_model = AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    down_projection = hf_model.gpt_neox.layers[1].mlp.dense_4h_to_h
    captured = []
    handle = down_projection.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    with torch.no_grad():
        hf_model(torch.as_tensor(tokens, dtype=torch.long))
    handle.remove()
    expected = captured[0].numpy()[mask]  # [n_unmasked, intermediate_size]
    codes = open_codes(outputs[1]["out_codes"])
    np.testing.assert_allclose(codes.to_csr().toarray(), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.load(outputs[1]["out_decoder"]), down_projection.weight.detach().numpy().T, atol=0)
    assert json.loads(outputs[1]["out_meta"].read_text())["hook"] == "blocks.1.mlp.hook_post"


def test_hf_neuron_sizes_come_from_the_cached_config(tmp_path, hub_cache):
    from featsim.lm import LMSpec
    from featsim.saes import SAESpec, sae_info

    install_in_hf_cache(hub_cache, "EleutherAI/pythia-70m", build_neox_checkpoint(tmp_path / "tiny-pythia"))
    lm = LMSpec.from_config("P", {"source": "hf", "name": "pythia-70m"})
    info = sae_info(SAESpec.from_config("P_neurons", {"source": "neurons"}, lm=lm), 2, tmp_path)
    assert (info.hook_name, info.d_in, info.d_sae) == ("blocks.2.mlp.hook_post", 64, 64)
    assert info.processing == {} and info.ids["lm_name"] == "pythia-70m"


def test_neuron_config_mistakes_name_the_key(toy, tmp_path):
    from featsim.lm import LMSpec
    from featsim.saes import SAESpec, sae_info
    from featsim.targets.activations import make_codes

    lm = LMSpec.from_config("A", {"source": "toy"})
    with pytest.raises(ConfigError) as err:
        sae_info(SAESpec.from_config("A_neurons", {"source": "neurons"}, lm=lm), 2, toy["exp_dir"])
    assert err.value.key == "models.A_neurons.layers"
    with pytest.raises(ValueError, match="carries no LM"):
        sae_info(SAESpec.from_config("A_neurons", {"source": "neurons"}), 0, toy["exp_dir"])
    outputs = neuron_codes(toy["tokens_path"], toy["exp_dir"], tmp_path, {"source": "toy"}, [0])
    with pytest.raises(ConfigError) as err:
        make_codes(outputs[0]["acts"], "A_neurons", 0, {"source": "neurons"}, "pre", {}, toy["exp_dir"],
                   tmp_path / "pre.zarr", tmp_path / "pre.npy", tmp_path / "pre.json", device="cpu")
    assert err.value.key == "models.A_neurons.activation"


def test_a_neurons_entry_gets_its_own_activation_store_with_the_mlp_hook(repo, toy):
    """A config entry {lm_from: A, sae: {source: neurons}} never reads A's residual-stream stores."""
    from featsim.activations import (activation_layers, activation_owner, activation_owners, activation_users,
                                     plan_layers)
    from featsim.config import lm_owner, validate_config
    from featsim.lm import LMSpec

    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["models"]["A_neurons"] = {"lm_from": "A", "layers": [0, 1], "sae": {"source": "neurons"}}
    config["models"]["A_neurons_shared"] = {"lm_from": "A", "layers": [1], "sae": {"source": "neurons"},
                                            "share_activations": True}
    validate_config(config)
    assert activation_owner(config, "A_sae2") == "A"
    assert activation_owner(config, "A_neurons") == "A_neurons"
    assert activation_owner(config, "A_neurons_shared") == "A_neurons_shared"
    assert {"A", "A_neurons", "A_neurons_shared"} <= set(activation_owners(config))
    assert "A_neurons" not in activation_users(config, "A")
    users = activation_users(config, "A_neurons")
    assert list(users) == ["A_neurons"] and activation_layers(config, "A_neurons") == [0, 1]
    owner = lm_owner(config, "A_neurons")
    lm = LMSpec.from_config(owner, config["models"][owner]["lm"])
    plans, processing = plan_layers(users, False, toy["exp_dir"], lm)
    assert {layer: (plan.hook, plan.d_in) for layer, plan in plans.items()} == {
        0: ("blocks.0.mlp.hook_post", D_MLP), 1: ("blocks.1.mlp.hook_post", D_MLP)}
    assert processing == {}


def test_auto_engine_takes_the_dense_cpu_path_for_dense_codes_with_the_same_result():
    """Dense codes (as MLP neurons give) select dense-cpu under `auto`, sparse codes the sparse kernel."""
    from featsim.correlate import max_correlation

    rng = np.random.default_rng(0)
    dense_a = sp.csr_matrix(rng.normal(size=(1000, 300)).astype(np.float32))
    dense_b = sp.csr_matrix((dense_a[:, :250].toarray() + rng.normal(size=(1000, 250))).astype(np.float32))
    sparse_a = sp.random(1000, 300, density=0.02, random_state=rng, format="csr", dtype=np.float32)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)  # the cost model scales with threads; fix them so the choice is the same anywhere
    try:
        auto = max_correlation(dense_a, dense_b, top_k=4, min_active=5, device="auto")
        sparse_kernel = max_correlation(dense_a, dense_b, top_k=4, min_active=5, device="cpu")
        assert max_correlation(sparse_a, sparse_a, top_k=4, min_active=5, device="auto").engine == "sparse-cpu"
    finally:
        numba.set_num_threads(previous)
    assert auto.engine == "dense-cpu" and sparse_kernel.engine == "sparse-cpu"
    for name in ("topk_a_for_b", "topk_b_for_a"):
        np.testing.assert_array_equal(getattr(auto, name), getattr(sparse_kernel, name))
    for name in ("topk_corr_for_b", "topk_corr_for_a"):
        np.testing.assert_allclose(getattr(auto, name), getattr(sparse_kernel, name), atol=1e-12, rtol=0)
    assert_matches_oracle(auto, dense_a, dense_b, min_active=5, top_k=4)
