"""The code's shape: packages by concept, small modules, and who may touch what.

Read from the source with `ast`, so a rule broken anywhere fails here with the file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.paths import ROOT

PACKAGES = ("harness", "tracking", "experiments")
# The one module per library that may touch its private pieces.
DOORS = {
    "harness/keras_internals.py": "keras",
    "experiments/search/optuna_internals.py": "optuna",
    "tracking/mlflow/mlflow_internals.py": "mlflow",
    "tracking/tensorboard_internals.py": "tensorboard",
}
LIBRARIES = ("keras", "tensorflow", "optuna", "mlflow", "tensorboard")
# Copied into every logged model's `code/` as its pyfunc loader, it must run where
# keras-harness is not installed, so it cannot import the door; it loads the model through
# MLflow's Keras flavor's own loader.
STANDALONE = {"tracking/mlflow/keras_model/loader.py": {"_load_pyfunc"}}
ALLOWED_PRIVATE = {"_fields"}  # a namedtuple's public protocol
MAX_LINES, MAX_MODULES = 400, 12


def _modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _own_private_names() -> set[str]:
    """The private names our own code defines: methods, attributes set on `self`/`cls`,
    module and class level assignments."""
    names: set[str] = set()
    for _, tree in _modules(*PACKAGES):
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if name.startswith("_")}


def _door_private_names() -> set[str]:
    """The libraries' private names the doors touch: never touched elsewhere, even where one
    of our own classes has an attribute of the same name."""
    names: set[str] = set()
    for path, tree in _modules(*PACKAGES):
        if path not in DOORS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                    names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.isidentifier() and _private(node.value):  # getattr(x, "_name")
                    names.add(node.value)
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_outside_tracking_builds_an_mlflow_client() -> None:
    offences = [
        f"{path}:{node.lineno}"
        for path, tree in _modules("harness", "experiments", "benchmarks")
        for node in ast.walk(tree)
        if (isinstance(node, ast.Name) and node.id == "MlflowClient")
        or (isinstance(node, ast.alias) and node.name == "MlflowClient")
    ]
    assert offences == [], "talk to MLflow through tracking.mlflow (MlflowRuns, queries)"


def test_outside_the_doors_no_private_piece_of_a_library_is_touched() -> None:
    own = (_own_private_names() - _door_private_names()) | ALLOWED_PRIVATE
    offences = []
    for path, tree in _modules(*PACKAGES):
        if path in DOORS:
            continue
        allowed = own | STANDALONE.get(path, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] not in LIBRARIES:
                    continue
                if parts[1:2] in (["src"], ["python"]) or any(map(_private, parts)):
                    offences.append(f"{path}:{node.lineno}: from {node.module} import")
                for alias in node.names:
                    if _private(alias.name) and alias.name not in allowed:
                        offences.append(f"{path}:{node.lineno}: imports {alias.name}")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                if node.attr not in allowed:
                    offences.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
                and node.args[1].value not in allowed
            ):
                offences.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert offences == [], f"private pieces belong in the doors {sorted(DOORS)}"


def test_harness_and_tracking_keep_to_their_side() -> None:
    forbidden = {
        "harness": {"tracking", "experiments", "mlflow", "optuna"},
        "tracking": {"harness", "experiments", "optuna"},
    }
    offences = []
    for package, names in forbidden.items():
        for path, tree in _modules(package):
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    imported = [node.module or ""]
                else:
                    continue
                offences += [
                    f"{path}:{node.lineno}: {name}" for name in imported
                    if name.split(".")[0] in names
                ]  # fmt: skip
    assert offences == []


def test_modules_and_folders_stay_small() -> None:
    long = [
        f"{path}: {len((ROOT / path).read_text().splitlines())} lines"
        for path, _ in _modules(*PACKAGES)
        if len((ROOT / path).read_text().splitlines()) > MAX_LINES
    ]
    assert long == [], f"modules up to ~{MAX_LINES} lines"
    crowded = [
        f"{folder.relative_to(ROOT)}: {count} modules"
        for package in PACKAGES
        for folder in [ROOT / package, *(ROOT / package).rglob("*/")]
        if (folder / "__init__.py").is_file()
        and (count := len([p for p in folder.glob("*.py") if p.name != "__init__.py"]))
        > MAX_MODULES
    ]
    assert crowded == [], f"folders up to {MAX_MODULES} modules: make sub-packages"


def test_every_package_says_what_it_holds_and_what_it_may_import() -> None:
    quiet = []
    for package in PACKAGES:
        for init in [ROOT / package / "__init__.py", *(ROOT / package).rglob("*/__init__.py")]:
            docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
            if "May import" not in docstring:
                quiet.append(init.relative_to(ROOT).as_posix())
    assert quiet == []


# What each package of the application may import of the others (besides itself).
APPLICATION = {
    "experiments/config": {"experiments.errors"},
    "experiments/zoo": {"experiments.errors"},
    "experiments/ui": {"experiments.errors", "experiments.config", "experiments.tracking_setup"},
    "experiments/run": {
        "experiments.errors",
        "experiments.config",
        "experiments.zoo",
        "experiments.ui",
        "experiments.tracking_setup",
        "experiments.quiet",
    },
    "experiments/search": {
        "experiments.errors",
        "experiments.config",
        "experiments.run",
        "experiments.ui",
        "experiments.tracking_setup",
        "experiments.quiet",
    },
}


def test_the_application_s_packages_import_only_what_their_docstrings_allow() -> None:
    offences = []
    for folder, allowed in APPLICATION.items():
        own = folder.replace("/", ".")
        for path, tree in _modules(folder):
            for node in ast.walk(tree):
                if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                    continue
                module = node.module
                if not module.startswith("experiments") or module.startswith(own):
                    continue
                if not any(module == a or module.startswith(f"{a}.") for a in allowed):
                    offences.append(f"{path}:{node.lineno}: {module}")
    assert offences == []
