"""Import contracts of the library, read from the source (every import, function-local ones included).

The library knows no workflow: it never imports Snakemake. Statistics take arrays: metrics, nulls and
multiple testing import no store, model or workflow code. Stores know no analysis. The internal import
graph has no cycle (a cycle hidden by function-local imports is still a cycle).
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
