"""`featsim inspect` describes every kind of store and result file, and flags incomplete ones."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import scipy.sparse as sp

from featsim import stores
from featsim.cli import main
from featsim.parquet import write_parquet
from featsim.provenance import make_provenance, save_npy, write_json


def test_inspect_codes_text_and_json(tmp_path, capsys):
    codes = sp.random(50, 20, density=0.1, random_state=0, format="csr", dtype=np.float32)
    stores.write_codes(tmp_path / "c.zarr", codes, make_provenance({"x": 1}, model="A", hook="blocks.0.hook_resid_post"))
    assert main(["inspect", str(tmp_path / "c.zarr")]) == 0
    text = capsys.readouterr().out
    assert "kind: codes" in text and "density: 0.1" in text and "hook: blocks.0.hook_resid_post" in text
    assert main(["inspect", "--json", str(tmp_path / "c.zarr")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [50, 20] and info["density"] == codes.nnz / 1000
    assert info["provenance"]["model"] == "A" and set(info["arrays"]) == {"indptr", "indices", "values"}
    assert info["arrays"]["indptr"]["codecs"][-2:] == ["ZstdCodec", "Crc32cCodec"]


def test_inspect_tokens_acts_and_tables(tmp_path, capsys):
    stores.write_tokens(tmp_path / "t.zarr", np.arange(12).reshape(3, 4), np.ones((3, 4), bool), {"seed": 5})
    with stores.ActsWriter(tmp_path / "a.zarr", 3) as writer:
        writer.append(np.ones((4, 3)))
    write_parquet(tmp_path / "p.parquet", pd.DataFrame({"a": [1], "b": [2], "corr": [0.5]}), {"config_hash": "abc"})
    write_json(tmp_path / "s.json", {"observed": 0.4, "p_value": 0.01, "provenance": {"config_hash": "def"}})
    save_npy(tmp_path / "n.npy", np.arange(10.0))
    pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / "s.csv", index=False)
    paths = ["t.zarr", "a.zarr", "p.parquet", "s.json", "n.npy", "s.csv"]
    assert main(["inspect", "--json", *[str(tmp_path / p) for p in paths]]) == 0
    out = capsys.readouterr().out
    decoder = json.JSONDecoder()
    infos, pos = [], 0
    while pos < len(out.strip()):
        info, pos = decoder.raw_decode(out, pos)
        infos.append(info)
        while pos < len(out) and out[pos].isspace():
            pos += 1
    kinds = [i["kind"] for i in infos]
    assert kinds == ["tokens", "activations", "table (parquet)", "record (json)", "array (npy)", "table (csv)"]
    assert infos[0]["shape"] == [3, 4] and infos[0]["provenance"]["seed"] == 5
    assert infos[2]["provenance"]["config_hash"] == "abc" and infos[3]["fields"]["p_value"] == 0.01


def test_inspect_reports_incomplete_store(tmp_path, capsys):
    try:
        with stores.atomic_store(tmp_path / "c.zarr", "codes", {}):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "c.zarr").exists()
    # an interrupted writer that could not clean up (killed) leaves its temporary path behind
    import zarr

    partial = tmp_path / "c.zarr.tmp-999"
    zarr.open_group(str(partial), mode="w").attrs.update({"kind": "codes", "complete": False})
    assert main(["inspect", str(partial)]) == 1
    assert "incomplete" in capsys.readouterr().out
    # a store marked incomplete at its final name (e.g. written by another tool) is flagged too
    marked = tmp_path / "m.zarr"
    zarr.open_group(str(marked), mode="w").attrs.update({"kind": "codes", "complete": False})
    assert main(["inspect", str(marked)]) == 1
    assert "INCOMPLETE" in capsys.readouterr().out


def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "featsim.cli", "inspect", str(tmp_path / "nope.zarr")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "does not exist" in result.stderr
