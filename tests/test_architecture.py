"""Import contracts of the library, read from the source (every import, function-local ones included).

The library knows no workflow: it never imports Snakemake. Statistics take arrays: metrics, nulls and
multiple testing import no store, model or workflow code. Stores know no analysis. The internal import
graph has no cycle (a cycle hidden by function-local imports is still a cycle). Imports sit at the top of their
module unless import cost is the reason (test_function_local_imports_are_only_for_import_cost).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import featsim

PACKAGE = Path(featsim.__file__).parent

STATISTICS = ("featsim.metrics", "featsim.null", "featsim._null_kernels", "featsim._rank_kernels",
              "featsim.null_moments", "featsim.null_tail", "featsim.multiple_testing", "featsim.concept_agreement",
              "featsim.contrasts")
"""Pure statistics: arrays in, numbers out."""

MODEL_AND_STORE_CODE = ("featsim.stores", "featsim.lm", "featsim.saes", "featsim.activations", "featsim.tokens",
                        "featsim.toy", "featsim.steering", "featsim.layout", "transformer_lens", "sae_lens", "zarr",
                        "datasets", "transformers", "snakemake")

STORE_MAY_IMPORT = ("featsim.provenance", "featsim.errors", "featsim")
"""What featsim.stores may import from featsim: atomic writes and errors, nothing that analyses."""


def _module_name(path: Path) -> str:
    parts = ("featsim",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code; `from featsim import x` counts as featsim.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _module_name(path).rsplit(".", node.level)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            if module == "featsim":
                found.update(f"featsim.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _matches(module: str, prefixes) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_import_walk_sees_function_local_imports():
    """Guard of the walk itself: featsim.lm imports transformer_lens only inside functions."""
    assert "transformer_lens" in MODULES["featsim.lm"]
    assert "featsim.layout" in MODULES["featsim.lm"]


def test_the_library_never_imports_snakemake():
    offenders = {module: sorted(i for i in imports if _matches(i, ("snakemake",)))
                 for module, imports in MODULES.items()}
    assert {m: i for m, i in offenders.items() if i} == {}


@pytest.mark.parametrize("module", STATISTICS)
def test_statistics_import_no_store_model_or_workflow_code(module):
    assert module in MODULES, f"{module} was renamed: update STATISTICS"
    assert sorted(i for i in MODULES[module] if _matches(i, MODEL_AND_STORE_CODE)) == []


def test_stores_import_no_analysis():
    internal = {i for i in MODULES["featsim.stores"] if _matches(i, ("featsim",))}
    assert sorted(internal - set(STORE_MAY_IMPORT)) == []


def test_no_import_cycles_between_featsim_modules():
    """Function-local imports count: moving one to the top of its module can then never create a cycle."""
    graph = {module: {i for i in imports if i in MODULES and i != module} for module, imports in MODULES.items()}
    graph = {module: targets - {"featsim"} for module, targets in graph.items()}  # the package __init__
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


HEAVY_IMPORT_MS = {
    "torch": 1690, "transformers": 1030, "transformer_lens": 8460, "sae_lens": 9170, "datasets": 1260,
    "huggingface_hub": 220, "safetensors.torch": 1570, "scipy.sparse": 270, "scipy.special": 350,
    "scipy.linalg": 255, "scipy.stats": 1190, "matplotlib": 140, "pandas": 440, "numba": 295, "zarr": 290,
}
"""Third-party modules (and their submodules) whose import costs over 100 ms after numpy's: `python -X importtime -c
"import numpy; <import as featsim writes it>"`, least of 3 runs (7 near the line) on the 2-core dev machine;
huggingface_hub's root is lazy (1 ms) but `hf_hub_download` costs 220 and `.errors` 106-127. Measured and kept out
(ms): jsonschema 73-93, pyarrow.parquet 62-92, tqdm.auto 70-77, pyarrow 55, yaml 22, scipy (root) 17,
tokenizers 11, threadpoolctl 9, logging 8, difflib 2, safetensors (root, safe_open) 1. numpy itself: 110."""

HEAVY_PULLS = {
    "transformers": {"huggingface_hub"},
    "transformer_lens": {"torch", "transformers", "datasets", "huggingface_hub", "safetensors.torch", "scipy.sparse",
                         "scipy.special", "scipy.linalg", "pandas"},
    "sae_lens": {"torch", "transformers", "transformer_lens", "datasets", "huggingface_hub", "safetensors.torch",
                 "scipy.sparse", "scipy.special", "scipy.linalg", "pandas"},
    "datasets": {"huggingface_hub", "pandas"},
    "safetensors.torch": {"torch"},
    "scipy.stats": {"scipy.sparse", "scipy.special", "scipy.linalg"},
}
"""Heavy modules a heavy module imports itself (read from sys.modules after importing it), so that a module which
already imports sae_lens at top level gains nothing by importing torch inside a function."""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> set[str]:
    """Modules an import statement may load: `from a import b` counts a and a.b (b may be a submodule)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        base = importer.rsplit(".", node.level)[0]
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    return {module} | {f"{module}.{alias.name}" for alias in node.names}


def _top_level_and_local_imports(path: Path):
    """(imports run when the module is imported, [(line, function, node)] of imports inside function bodies).
    Class bodies, `if` and `try` at module level run at import; `if TYPE_CHECKING:` blocks never run."""
    top, local = [], []

    def walk(statements, function):
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (local.append((node.lineno, function, node)) if function else top.append(node))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                walk(node.body, function or node.name)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    block = getattr(node, field, None)
                    if isinstance(block, list):
                        walk([b for b in block if isinstance(b, ast.AST)], function)

    walk(ast.parse(path.read_text()).body, None)
    return top, local


SOURCES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TOP_AND_LOCAL = {module: _top_level_and_local_imports(path) for module, path in SOURCES.items()}


def _heavy_of_third_party(module: str) -> set[str]:
    heavy = {h for h in HEAVY_IMPORT_MS if module == h or module.startswith(h + ".")}
    return heavy.union(*(HEAVY_PULLS.get(h, set()) for h in heavy))


def _loaded(target: str) -> list[str]:
    """featsim modules that importing `target` runs: the module and every package above it."""
    parts = target.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in SOURCES]


def _heavy_of(targets: set[str], seen: set[str] | None = None) -> set[str]:
    """Heavy third-party modules that importing `targets` loads, following featsim's top-level imports only."""
    seen = set() if seen is None else seen
    heavy: set[str] = set()
    for target in targets:
        if not _matches(target, ("featsim",)):
            heavy |= _heavy_of_third_party(target)
        for module in _loaded(target):
            if module not in seen:
                seen.add(module)
                top, _ = TOP_AND_LOCAL[module]
                heavy |= _heavy_of(set().union(*(_targets(node, module) for node in top)), seen)
    return heavy


def _shown(node: ast.Import | ast.ImportFrom, importer: str) -> str:
    """The module an import statement names: `from featsim import tokens` shows featsim.tokens."""
    if isinstance(node, ast.Import):
        return ", ".join(alias.name for alias in node.names)
    module = min(_targets(node, importer), key=len)
    submodules = sorted(t for t in _targets(node, importer) if t != module and t in SOURCES)
    return ", ".join(submodules) or module


def _unjustified_local_imports() -> list[str]:
    """`file:line function -> module` of every function-local import that loads no heavy module the importing
    module does not already load at top level."""
    flagged = []
    for module, (_, local) in TOP_AND_LOCAL.items():
        already = _heavy_of({module})
        for line, function, node in local:
            if not _heavy_of(_targets(node, module)) - already:
                where = f"{SOURCES[module].relative_to(PACKAGE.parent)}:{line} {function}"
                flagged.append(f"{where} -> {_shown(node, module)}")
    return flagged


def test_the_import_policy_walk_classifies_known_cases():
    """Guard of the policy walk itself: heavy libraries and what they pull, featsim modules through their top-level
    imports only, TYPE_CHECKING blocks ignored, function bodies seen."""
    assert _heavy_of({"torch.nn"}) == {"torch"}
    assert {"torch", "transformer_lens"} <= _heavy_of({"sae_lens.saes"})
    assert _heavy_of({"yaml", "logging", "scipy", "featsim.errors"}) == set()
    assert "zarr" in _heavy_of({"featsim.stores"})  # stores imports zarr at top level
    assert "transformer_lens" not in _heavy_of({"featsim.lm"})  # lm imports it only inside functions
    assert any("transformer_lens" in _targets(node, "featsim.lm") for _, _, node in TOP_AND_LOCAL["featsim.lm"][1])
    sequences = "featsim.toy.sequences"
    top = set().union(*(_targets(node, sequences) for node in TOP_AND_LOCAL[sequences][0]))
    assert "transformers" not in top  # imported under `if TYPE_CHECKING:` only


def test_function_local_imports_are_only_for_import_cost():
    """Import policy: every import sits at the top of its module, except where import cost is the reason.

    A function-local import is allowed only when it loads a heavy third-party module (HEAVY_IMPORT_MS: over 100 ms
    of import time on top of numpy) that the importing module does not already load at top level; a featsim module
    counts as heavy when its top-level imports, followed transitively through featsim (read from the AST), load one.
    Everything else (the standard library, yaml, tqdm, pyarrow, tokenizers, cheap featsim modules, and anything the
    module already pays for at top level) goes to the top. Breaking an import cycle is not a reason: a cycle is a
    design fault (test_no_import_cycles_between_featsim_modules).
    """
    flagged = _unjustified_local_imports()
    assert not flagged, ("function-local imports that save no heavy import; move them to the top of the module:\n"
                         + "\n".join(flagged))


# ---------------------------------------------------------------- one provenance convention

SCRIPTS = PACKAGE.parents[1] / "workflow" / "scripts"
WRITES = {"make_provenance", "write_table", "write_json", "write_parquet", "save_npy", "atomic_path", "atomic_store"}
"""Calls that stamp provenance or write a target."""


def _functions(path: Path):
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _called_names(node: ast.AST) -> set[str]:
    return {call.func.id if isinstance(call.func, ast.Name) else call.func.attr
            for call in ast.walk(node) if isinstance(call, ast.Call) and isinstance(call.func, (ast.Name, ast.Attribute))}


def _parameters(function: ast.FunctionDef) -> list[str]:
    arguments = function.args
    return [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]


def test_scripts_never_stamp_provenance():
    """A script passes its target's ids (wildcards, rule); the library stamps the record from the config it was
    given. So no script imports featsim.provenance or builds a record."""
    offenders = sorted(path.name for path in SCRIPTS.glob("*.py")
                       if "featsim.provenance" in _imports(path) or "make_provenance" in _called_names(
                           ast.parse(path.read_text())))
    assert offenders == []


def test_targets_take_their_identity_as_ids():
    """Every library function that stamps a provenance record or writes a table takes the target's identity as
    `ids`; none takes a made record (`provenance`), an `identity` or a per-output `ids_list`."""
    stamping, odd = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _module_name(path) in ("featsim.provenance", "featsim.parquet"):  # the record's own writers
            continue
        for function in _functions(path):
            name = f"{_module_name(path)}.{function.name}"
            parameters = _parameters(function)
            if {"provenance", "identity", "ids_list", "provenance_slice"} & set(parameters) and \
                    WRITES & _called_names(function):
                odd.append(name)
            if {"make_provenance", "write_table"} & _called_names(function) and not function.name.startswith("_") \
                    and "ids" not in parameters:
                stamping.append(name)
    assert odd == [] and stamping == []


FORMAT_OWNERS = ("featsim.provenance", "featsim.parquet", "featsim.stores", "featsim.correlation_result",
                 "featsim.targets", "featsim.toy")
"""Modules that may write: the file formats (atomic writes, stores) and the rule targets (the toy route's
training functions are its targets)."""
FORMAT_FUNCTIONS = {"featsim.alignment.write_alignment", "featsim.figures.save_figure", "featsim.summary.write_html"}
"""Single writers of one format that live beside the code that reads it."""
WRITE_CALLS = WRITES | {"save_figure", "write_html", "write_correlation", "write_alignment", "write_tokens"}


def test_stage_modules_stamp_and_write_nothing():
    """Stage computation is separate from target writing: outside featsim.targets (and the format owners),
    no function stamps provenance or writes a file."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _matches(module, FORMAT_OWNERS):
            continue
        for function in _functions(path):
            if f"{module}.{function.name}" not in FORMAT_FUNCTIONS and WRITE_CALLS & _called_names(function):
                offenders.append(f"{module}.{function.name}")
    assert offenders == []
