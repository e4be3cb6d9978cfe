"""Activations and codes end to end on a tiny Pythia-architecture checkpoint, against independent oracles.

Oracles: residual streams from plain transformers (`hidden_states[L+1]` = output of block L), the SAE's own
`encode` on them, and sparsify's encoder written in numpy; rows are the unmasked positions in row-major order.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featsim.errors import ConfigError
from test_loaders import (D_MODEL, N_LAYERS, WORDS, build_neox_checkpoint, hf_hidden_states, identity_topk_sae,
                          random_topk_sae, save_sae, sparsify_encode_numpy, write_sparsify_checkpoint)

N_SEQ, CTX = 5, 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint dir, a tokens store (BOS first, a padded tail, a masked special) and identity SAEs."""
    from featsim.stores import write_tokens
    from featsim.tokens import vocab_hash
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("acts")
    checkpoint = build_neox_checkpoint(root / "tiny-pythia")
    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, len(tok), size=(N_SEQ, CTX)).astype(np.int32)
    tokens[:, 0] = tok.bos_token_id
    mask = tokens != tok.bos_token_id
    mask[-1, 8:] = False  # padding at the end of the last row
    tokens[-1, 8:] = tok.eos_token_id
    mask[tokens == tok.convert_tokens_to_ids("w3")] = False  # a listed special token
    tokens_path = root / "tokens.zarr"
    write_tokens(tokens_path, tokens, mask, {"tokenizer": str(checkpoint), "vocab_hash": vocab_hash(tok)})
    saes = {layer: identity_topk_sae(D_MODEL, f"blocks.{layer}.hook_resid_post", seed=layer) for layer in range(N_LAYERS)}
    for layer, sae in saes.items():
        save_sae(sae, root / "saes" / f"L{layer}")
    hidden = hf_hidden_states(checkpoint, torch.as_tensor(tokens, dtype=torch.long))
    return {"root": root, "checkpoint": checkpoint, "tokens_path": tokens_path, "tokens": tokens, "mask": mask,
            "saes": saes, "hidden": hidden}


def run_acts(setup, out_dir, layers, sae=None, legacy=None, batch_size=2, users=None, model="A"):
    from featsim.targets.activations import make_activations

    sae = sae or {"source": "local", "path": str(setup["root"] / "saes" / "L{layer}")}
    outs = {layer: out_dir / f"L{layer}.zarr" for layer in layers}
    stats = make_activations(setup["tokens_path"], outs, model, "A", {"source": "local", "path": str(setup["checkpoint"])},
                             users or {model: {"sae": sae, "layers": layers}}, legacy, setup["root"], device="cpu",
                             batch_size=batch_size, ids={"experiment": "e"})
    return outs, stats


def run_codes(setup, acts_path, out_dir, layer, sae=None, activation="code", legacy=None):
    from featsim.targets.activations import make_codes

    sae = sae or {"source": "local", "path": str(setup["root"] / "saes" / "L{layer}")}
    paths = {"out_codes": out_dir / "codes.zarr", "out_decoder": out_dir / "decoder.npy", "out_meta": out_dir / "meta.json"}
    meta = make_codes(acts_path, "A", layer, sae, activation, legacy or {}, setup["root"], device="cpu", **paths)
    return paths, meta


def test_one_forward_pass_writes_every_layer_and_codes_equal_sae_encode(setup, tmp_path, monkeypatch):
    import featsim.lm
    from featsim.stores import open_acts, open_codes

    calls = []
    real_capture = featsim.lm.capture_hooks
    monkeypatch.setattr(featsim.lm, "capture_hooks",
                        lambda lm, tokens, hooks, select: calls.append(list(hooks)) or real_capture(lm, tokens, hooks, select))
    outs, stats = run_acts(setup, tmp_path / "acts", [0, 1], batch_size=2)
    assert calls == [["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]] * 3  # ceil(5 / 2) passes, both hooks
    mask = setup["mask"]
    for layer in (0, 1):
        expected = setup["hidden"][layer + 1].numpy()[mask]  # output of block L at unmasked positions
        acts = open_acts(outs[layer])
        assert acts.attrs["hook"] == f"blocks.{layer}.hook_resid_post" and acts.n_tokens == mask.sum()
        np.testing.assert_allclose(np.concatenate(list(acts.iter_chunks())), expected, atol=1e-5, rtol=1e-5)

        paths, meta = run_codes(setup, outs[layer], tmp_path / f"codes{layer}", layer)
        sae = setup["saes"][layer]
        oracle = sae.encode(torch.as_tensor(expected)).detach().numpy()
        codes = open_codes(paths["out_codes"])
        np.testing.assert_allclose(codes.to_csr().toarray(), oracle, atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(np.load(paths["out_decoder"]), sae.W_dec.detach().numpy())
        on_disk = json.loads(paths["out_meta"].read_text())
        assert on_disk["hook"] == f"blocks.{layer}.hook_resid_post" and on_disk["d_sae"] == 2 * D_MODEL
        assert on_disk["quality"]["fvu"] < 1e-6 and on_disk["quality"]["n_tokens"] == mask.sum()
        assert on_disk["quality"]["mean_l0"] == pytest.approx((oracle != 0).sum(1).mean())
        assert codes.attrs["fvu"] == on_disk["quality"]["fvu"] and codes.attrs["hook"] == on_disk["hook"]
    assert stats["positions"] == N_SEQ * CTX


def test_batch_size_does_not_change_the_activations(setup, tmp_path):
    from featsim.stores import open_acts

    one, _ = run_acts(setup, tmp_path / "b1", [2], batch_size=1)
    four, _ = run_acts(setup, tmp_path / "b4", [2], batch_size=4)
    np.testing.assert_allclose(open_acts(one[2]).array[:], open_acts(four[2]).array[:], atol=1e-6)


def test_legacy_layer_offset_feeds_the_previous_block(setup, tmp_path):
    from featsim.stores import open_acts

    outs, _ = run_acts(setup, tmp_path / "acts", [0, 2], legacy={"layer_offset": True})
    mask = setup["mask"]
    assert open_acts(outs[0]).attrs["hook"] == "blocks.0.hook_resid_pre"
    assert open_acts(outs[2]).attrs["hook"] == "blocks.1.hook_resid_post"
    for layer in (0, 2):  # the study's hidden_states[L]
        np.testing.assert_allclose(open_acts(outs[layer]).array[:], setup["hidden"][layer].numpy()[mask], atol=1e-5)
    paths, meta = run_codes(setup, outs[2], tmp_path / "codes", 2, legacy={"layer_offset": True})
    assert meta["sae_hook"] == "blocks.2.hook_resid_post" and meta["hook"] == "blocks.1.hook_resid_post"
    with pytest.raises(ConfigError) as err:  # acts of the offset hook are not this SAE's own hook
        run_codes(setup, outs[2], tmp_path / "codes_no_legacy", 2)
    assert err.value.key == "models.A.sae.path"


def test_sparsify_codes_and_pre_activations_match_numpy(setup, tmp_path):
    from featsim.stores import open_codes

    weights = write_sparsify_checkpoint(tmp_path / "repo" / "layers.1", D_MODEL, 80, k=5, seed=2)
    sae = {"source": "sparsify", "repo": str(tmp_path / "repo"), "max_fvu": 1e9}
    outs, _ = run_acts(setup, tmp_path / "acts", [1], sae=sae)
    x = setup["hidden"][2].numpy()[setup["mask"]]
    paths, meta = run_codes(setup, outs[1], tmp_path / "code", 1, sae=sae)
    np.testing.assert_allclose(open_codes(paths["out_codes"]).to_csr().toarray(), sparsify_encode_numpy(x, weights, 5),
                               atol=1e-4, rtol=1e-4)
    assert meta["quality"]["mean_l0"] == pytest.approx(5.0)
    pre_paths, pre_meta = run_codes(setup, outs[1], tmp_path / "pre", 1, sae=sae, activation="pre")
    pre = np.maximum((x - weights["b_dec"]) @ weights["encoder.weight"].T + weights["encoder.bias"], 0.0)
    np.testing.assert_allclose(open_codes(pre_paths["out_codes"]).to_csr().toarray(), pre, atol=1e-4, rtol=1e-4)
    assert pre_meta["quality"] == meta["quality"]  # quality always from the real code


def test_fvu_gate_stops_and_writes_nothing(setup, tmp_path):
    save_sae(random_topk_sae(D_MODEL, 64, 4, "blocks.1.hook_resid_post"), tmp_path / "bad" / "L1")
    sae = {"source": "local", "path": str(tmp_path / "bad" / "L{layer}")}
    outs, _ = run_acts(setup, tmp_path / "acts", [1], sae=sae)
    with pytest.raises(ConfigError) as err:
        run_codes(setup, outs[1], tmp_path / "codes", 1, sae=sae)
    assert err.value.key == "models.A.sae.max_fvu" and "blocks.1.hook_resid_post" in str(err.value)
    assert not (tmp_path / "codes").exists() or not any((tmp_path / "codes").iterdir())
    _, meta = run_codes(setup, outs[1], tmp_path / "lenient", 1, sae={**sae, "max_fvu": 1e9})
    assert meta["quality"]["fvu"] > 1


def test_config_mistakes_stop_with_the_key(setup, tmp_path):
    save_sae(identity_topk_sae(D_MODEL, "blocks.5.hook_resid_post"), tmp_path / "deep" / "L5")
    with pytest.raises(ConfigError) as err:
        run_acts(setup, tmp_path / "a", [5], sae={"source": "local", "path": str(tmp_path / "deep" / "L{layer}")})
    assert err.value.key == "models.A.layers"

    save_sae(identity_topk_sae(16, "blocks.1.hook_resid_post"), tmp_path / "narrow" / "L1")
    with pytest.raises(ConfigError) as err:
        run_acts(setup, tmp_path / "b", [1], sae={"source": "local", "path": str(tmp_path / "narrow" / "L{layer}")})
    assert err.value.key == "models.A.sae.path" and "d_in=16" in str(err.value)
    assert not (tmp_path / "b" / "L1.zarr").exists()

    save_sae(identity_topk_sae(D_MODEL, "blocks.1.hook_mlp_out"), tmp_path / "mlp" / "L1")
    users = {"A": {"sae": {"source": "local", "path": str(setup["root"] / "saes" / "L{layer}")}, "layers": [1]},
             "A2": {"sae": {"source": "local", "path": str(tmp_path / "mlp" / "L{layer}")}, "layers": [1]}}
    with pytest.raises(ConfigError) as err:
        run_acts(setup, tmp_path / "c", [1], users=users)
    assert err.value.key == "models.A2.share_activations"


def test_shared_activations_cover_the_union_of_layers(setup, tmp_path):
    from featsim.stores import open_acts

    local = {"source": "local", "path": str(setup["root"] / "saes" / "L{layer}")}
    users = {"A": {"sae": local, "layers": [0]}, "A2": {"sae": local, "layers": [0, 2]}}
    outs, _ = run_acts(setup, tmp_path / "acts", [0, 2], users=users)
    assert open_acts(outs[0]).attrs["users"] == ["A", "A2"] and open_acts(outs[2]).attrs["users"] == ["A2"]


def test_toy_checkpoint_route(setup, tmp_path):
    from featsim.targets.activations import make_activations
    from featsim.stores import open_acts

    toy_lm = pytest.importorskip("featsim.toy.lm")
    exp_dir = tmp_path / "results" / "toy"
    config = {"d_model": 16, "n_layers": 2, "d_head": 8, "n_heads": 2, "d_mlp": 32, "n_ctx": CTX,
              "d_vocab": len(WORDS) + 2, "act_fn": "gelu", "normalization_type": "LN", "seed": 0}
    model = toy_lm.build_model(config, setup["checkpoint"])
    toy_lm.save_toy_lm(model, config, setup["checkpoint"], exp_dir / "toy" / "lm" / "A")
    save_sae(identity_topk_sae(16, "blocks.1.hook_resid_post"), exp_dir / "toy" / "sae" / "A" / "L1")
    out = {1: tmp_path / "L1.zarr"}
    make_activations(setup["tokens_path"], out, "A", "A", {"source": "toy"}, {"A": {"sae": {"source": "toy"}, "layers": [1]}},
                     {}, exp_dir, device="cpu", batch_size=3)
    tokens = torch.as_tensor(setup["tokens"], dtype=torch.long)
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
    np.testing.assert_allclose(open_acts(out[1]).array[:], cache["blocks.1.hook_resid_post"].numpy()[setup["mask"]],
                               atol=1e-5)


def test_which_entry_computes_whose_activations():
    from featsim.activations import activation_layers, activation_owner, activation_owners, activation_users

    sae = {"source": "toy"}
    config = {"models": {"A": {"lm": {"source": "toy"}, "layers": [0, 1], "sae": sae},
                         "A_sae2": {"lm_from": "A", "layers": [1, 2], "sae": sae},
                         "A_own": {"lm_from": "A", "layers": [0], "sae": sae, "share_activations": False},
                         "B": {"lm": {"source": "toy"}, "layers": [1], "sae": sae}}}
    assert [activation_owner(config, m) for m in config["models"]] == ["A", "A", "A_own", "B"]
    assert activation_owners(config) == ["A", "A_own", "B"]
    assert list(activation_users(config, "A")) == ["A", "A_sae2"]
    assert activation_layers(config, "A") == [0, 1, 2] and activation_layers(config, "A_own") == [0]
