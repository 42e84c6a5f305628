"""The architecture the README promises, enforced: import rules between the packages, every public name
importable, the README's Architecture section matching the tree, choice lists generated from the registries."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"runtime": "edgeport.runtime", "trainer": "edgeport.trainer", "export": "edgeport.export"}
#: The trainer's model-loading API: the only part of the trainer export may import.
TRAINER_API_FOR_EXPORT = {"edgeport.trainer.loading"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports (relative imports resolved), at any depth of the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _source_files(top: str) -> list[Path]:
    return sorted((REPO / top).rglob("*.py"))


def _touches(imported: set[str], prefix: str) -> set[str]:
    return {m for m in imported if m == prefix or m.startswith(prefix + ".")}


@pytest.mark.parametrize("path", _source_files("runtime"), ids=lambda p: p.name)
def test_runtime_imports_nothing_of_trainer_export_or_torch(path):
    imported = _imports(path)
    bad = _touches(imported, "edgeport.trainer") | _touches(imported, "edgeport.export") | _touches(imported, "torch") \
        | _touches(imported, "torchvision")
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _source_files("trainer"), ids=lambda p: str(p.relative_to(REPO)))
def test_trainer_never_imports_export(path):
    bad = _touches(_imports(path), "edgeport.export")
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _source_files("export"), ids=lambda p: str(p.relative_to(REPO)))
def test_export_reaches_the_trainer_only_through_its_model_loading_api(path):
    trainer = _touches(_imports(path), "edgeport.trainer")
    bad = {m for m in trainer if not any(m == api or m.startswith(api + ".") for api in TRAINER_API_FOR_EXPORT)}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}; go through edgeport.trainer.loading"


#: The runtime's layers, lowest first (README "Architecture"): a module imports only from its own layer or lower
#: ones, at any depth of the file (a function-level or TYPE_CHECKING import counts: no lazy import dodges a circle).
#: ``manifest`` knows the bundle layout, so ``signing`` sits on it and the loader (``bundle``) on both.
RUNTIME_LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"errors", "atomic", "privacy", "redact", "machine", "inputs", "records", "formats", "onnx_external",
                    "cli_support", "confidence"}),
    ("contract", {"contract"}),
    ("preprocess", {"preprocess"}),
    ("frames", {"frames", "shutdown"}),
    ("backends", {"backends"}),
    ("manifest", {"manifest"}),
    ("signing", {"signing"}),
    ("bundle", {"bundle"}),
    ("classifier", {"classifier"}),
    ("conformance", {"conformance"}),
    ("reload", {"reload"}),
    ("stream", {"stream"}),
    ("service", {"service"}),
    ("cli", {"cli"}),
]
_RUNTIME = "edgeport.runtime"


def _runtime_unit(module: str) -> str | None:
    """``edgeport.runtime.stream.loop.Stream`` → ``stream``: the top-level module or package a name lives in."""
    if not module.startswith(_RUNTIME + "."):
        return None
    return module[len(_RUNTIME) + 1:].split(".")[0]


def _layer_of(unit: str) -> int:
    for i, (_, units) in enumerate(RUNTIME_LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"runtime/{unit} is in no layer of RUNTIME_LAYERS: give it one (README, Architecture)")


def runtime_import_graph() -> dict[str, set[str]]:
    """Every runtime module (the package facade ``__init__`` aside) → the runtime modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in _source_files("runtime"):
        module = _module_name(path)
        if module == _RUNTIME:
            continue
        targets = set()
        for name in _imports(path):
            if _runtime_unit(name) is None:
                continue
            # ``from .x import name`` records both ``…x`` and ``…x.name``: keep the longest that is a module.
            while name not in _RUNTIME_MODULES and "." in name[len(_RUNTIME):]:
                name = name.rpartition(".")[0]
            if name in _RUNTIME_MODULES and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


_RUNTIME_MODULES = {_module_name(p) for p in _source_files("runtime")}


@pytest.mark.parametrize("path", _source_files("runtime"), ids=lambda p: str(p.relative_to(REPO)))
def test_runtime_modules_import_only_their_own_layer_or_lower(path):
    module = _module_name(path)
    if module == _RUNTIME:
        return  # the package facade re-exports the public API from every layer
    own = _layer_of(_runtime_unit(module))
    upward = sorted(n for n in runtime_import_graph()[module] if _layer_of(_runtime_unit(n)) > own)
    assert not upward, (f"{path.relative_to(REPO)} (layer {RUNTIME_LAYERS[own][0]}) imports {upward} from a higher "
                        "layer; move the code down, or pass it in (README, Architecture)")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_runtime_has_no_import_circle():
    circle = _cycle(runtime_import_graph())
    assert circle is None, f"import circle in runtime/: {' → '.join(circle)}"


def test_the_circle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _foreign_private_reads(source: str, label: str) -> list[str]:
    """``obj._name`` reads where ``_name`` is defined nowhere in this file: another module's private state."""
    tree = ast.parse(source)
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    return [f"{label}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and node.attr not in defined and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]


def test_no_runtime_module_reads_another_modules_private_attributes():
    """``reload`` once read ``clf._options`` and called ``clf._adopt``, ``service/run.py`` did ``getattr(clf,
    "_watcher")``: the classifier's public API (``options``, ``swap_to``) is what other modules use."""
    found = [hit for path in _source_files("runtime")
             for hit in _foreign_private_reads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert not found, found


def test_the_private_read_check_finds_one():
    sample = "class A:\n    def f(self, other):\n        self._x = other._x\n\ndef g(clf):\n    return clf._options\n"
    assert _foreign_private_reads(sample, "sample.py") == ["sample.py:6 clf._options"]


def test_every_layer_is_in_the_readme():
    section = _readme_architecture()
    missing = [name for name, _ in RUNTIME_LAYERS if f"`{name}`" not in section]
    assert not missing, f"README's Architecture section does not name the runtime layers {missing}"


def _public_packages() -> list[str]:
    return [_module_name(p) for top in PACKAGES for p in _source_files(top) if p.name == "__init__.py"]


@pytest.mark.parametrize("package", _public_packages())
def test_every_name_in_all_imports(package):
    module = importlib.import_module(package)
    for name in getattr(module, "__all__", []):
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_trainer_public_api_gives_the_function_fit_not_a_module():
    """``from edgeport.trainer import TrainConfig, fit`` once ended in RecursionError (a submodule named fit)."""
    code = ("import edgeport.trainer.training\n"  # the submodule imported first must not shadow anything
            "from edgeport.trainer import TrainConfig, fit, find_lr, load_model\n"
            "import inspect; assert inspect.isfunction(fit) and inspect.isfunction(find_lr), fit\n"
            "assert TrainConfig().epochs >= 1\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_no_submodule_shadows_a_public_name():
    """With every submodule imported, each public name is still the function or class, not a module."""
    for package in _public_packages():
        module = importlib.import_module(package)
        folder = Path(module.__file__).parent
        for child in sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")):
            importlib.import_module(f"{package}.{child}")
        shadowed = [name for name in getattr(module, "__all__", []) if isinstance(getattr(module, name), types.ModuleType)]
        assert not shadowed, f"{package}: {shadowed} resolve to submodules"


def _readme_architecture() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Architecture\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Architecture' section"
    return match.group(1)


def test_readme_architecture_section_matches_the_tree():
    section = _readme_architecture()
    listed = set(re.findall(r"`((?:runtime|trainer|export)(?:/[a-z_]+)*/)`", section))
    packages = {str(p.parent.relative_to(REPO)) + "/" for top in PACKAGES for p in _source_files(top) if p.name == "__init__.py"}
    assert listed == packages, f"README lists {sorted(listed - packages)} that do not exist, misses {sorted(packages - listed)}"


def _run_blocked(code: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Run ``code`` with ``blocked`` modules unimportable (as on a device without the extras)."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)


HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "nncf", "openvino", "matplotlib", "timm", "tqdm", "tqdm.auto")


@pytest.mark.parametrize("cli", ["edgeport.export.bench.cli", "edgeport.runtime.cli", "edgeport.trainer.cli"])
def test_help_works_without_the_train_extra(cli):
    """``edge-bench --help`` failed where tqdm was absent; no CLI's --help may need torch, onnx or tqdm."""
    out = _run_blocked(f"from {cli} import main\nmain(['--help'])", HEAVY)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def test_choice_lists_come_from_the_registries():
    """openvino-fp16 was missing from hand-copied lists; every list is now generated."""
    from click.testing import CliRunner
    from edgeport.export.bench.cli import main as bench_main
    from edgeport.runtime.backends import backend_names
    from edgeport.runtime.cli import main as predict_main
    from edgeport.runtime.formats import DEPLOY_FORMATS

    predict_help = CliRunner().invoke(predict_main, ["classify", "--help"]).output
    bench_help = CliRunner().invoke(bench_main, ["--help"]).output
    for name in DEPLOY_FORMATS:
        assert name in predict_help and name in bench_help, name
    for backend in backend_names():
        assert backend in predict_help
    bad = CliRunner().invoke(predict_main, ["--model-format", "tflite", str(REPO), "x.jpg"])
    assert bad.exit_code == 2 and "openvino-fp16" in bad.output


def test_export_registry_builds_every_deployment_format_in_the_runtime_order():
    from edgeport.export.formats import FORMATS
    from edgeport.runtime.formats import DEPLOY_FORMATS

    assert list(FORMATS) == list(DEPLOY_FORMATS)
    assert {n for n, f in FORMATS.items() if f.needs_calibration} == {"onnx-int8", "openvino-int8"}


if __name__ == "__main__":  # python -m tests.test_architecture: the runtime's import graph, layer by layer
    graph = runtime_import_graph()
    for layer, units in RUNTIME_LAYERS:
        print(f"{layer}:")
        for module in sorted(m for m in graph if _runtime_unit(m) in units):
            short = lambda name: name[len(_RUNTIME) + 1:]  # noqa: E731
            print(f"  {short(module)} → {', '.join(sorted(short(n) for n in graph[module])) or '(nothing of the runtime)'}")
