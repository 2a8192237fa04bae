"""The tree keeps its shape: imports run one way, and dvc.yaml deps match what stages import.

DVC reruns a stage only when one of its declared deps changes, so a stage that imports a
project module its deps do not list silently keeps stale outputs. These checks read the
imports with ``ast`` (every import, also the lazy ones inside functions) and compare.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "xray_hpo"


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (a package's ``__init__.py``), or None."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Project modules ``path`` imports, with the packages Python loads on the way."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A module started as a process (``python -m xray_hpo.tuning.worker``) is a
            # dependency as much as an import is.
            names = [node.value] if node.value.startswith("xray_hpo.") else []
        for name in names:
            if not name.startswith("xray_hpo"):
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if module_file(prefix) is not None:
                    found.add(prefix)
    return found


def project_graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) - {module_name(p)}
            for p in sorted(PACKAGE.rglob("*.py"))}


def closure(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def strip_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between modules only: importing a.b.c loads package a.b, which is no arrow."""
    return {m: {d for d in deps if not (m.startswith(d + ".") or m == d)}
            for m, deps in graph.items()}


def test_no_import_cycles() -> None:
    graph = strip_packages(project_graph())
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_library_never_imports_the_cli() -> None:
    offenders = [m for m, deps in project_graph().items()
                 if "xray_hpo.cli" in deps and m != "xray_hpo.cli"]
    assert not offenders, f"modules importing the CLI: {offenders}"
    for path in PACKAGE.rglob("*.py"):
        assert "stages" not in {n.split(".")[0] for n in _all_import_names(path)}, path


def test_errors_module_is_a_leaf() -> None:
    assert project_graph()["xray_hpo.errors"] <= {"xray_hpo"}


def _all_import_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def stage_deps() -> dict[str, list[str]]:
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    out = {}
    for name, stage in pipeline["stages"].items():
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        out[name] = [d for d in deps if d.startswith("src/")]
    return out


def required_files(stage: str) -> set[str]:
    script = REPO / "stages" / f"{stage}.py"
    modules = closure(imported_modules(script), project_graph())
    return {str(module_file(m).relative_to(REPO)) for m in modules}  # type: ignore[union-attr]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_depends_on_exactly_the_modules_it_imports() -> None:
    problems = []
    for stage, deps in stage_deps().items():
        needed = required_files(stage)
        missing = sorted(p for p in needed if not covered(p, deps))
        unused = sorted(d for d in deps if not any(covered(p, [d]) for p in needed))
        if missing:
            problems.append(f"{stage}: imports but does not depend on {missing}")
        if unused:
            problems.append(f"{stage}: depends on but never imports {unused}")
        # A whole subpackage declared: the stage must use every module in it, else a change
        # to an unused module reruns it for nothing.
        for dep in deps:
            folder = REPO / dep
            if folder.is_dir():
                files = {str(p.relative_to(REPO)) for p in folder.rglob("*.py")}
                idle = sorted(files - needed - {f for f in files if f.endswith("__init__.py")})
                if idle:
                    problems.append(f"{stage}: {dep}/ declared whole, but {idle} unused")
    assert not problems, "\n".join(problems)


def test_the_stage_scripts_are_in_the_pipeline() -> None:
    scripts = {p.stem for p in (REPO / "stages").glob("*.py")}
    assert scripts == set(stage_deps()), "every stages/<name>.py is a dvc.yaml stage"


def test_modules_stay_readable() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    too_long = {p: n for p, n in sizes.items() if n > 400}
    assert not too_long, f"modules over 400 lines (split them by concern): {too_long}"


def test_every_output_persists_so_a_failed_run_keeps_the_previous_results() -> None:
    """Without ``persist: true`` DVC deletes a stage's outputs before running it, so a failed
    or interrupted stage would leave no results at all (issue 11)."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    missing = []
    for name, stage in pipeline["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                path, options = next(iter(entry.items())) if isinstance(entry, dict) else (
                    entry, {})
                if not (options or {}).get("persist"):
                    missing.append(f"{name}: {path}")
    assert not missing, f"outputs without persist: true: {missing}"


def test_the_longest_first_order_names_existing_test_files() -> None:
    """A renamed file would silently drop out of the order `make test` balances with."""
    from conftest import LONGEST_FIRST

    tests = REPO / "tests"
    assert [name for name in LONGEST_FIRST if not (tests / name).is_file()] == []


def test_the_training_stages_rerun_on_every_setting_that_changes_the_weights() -> None:
    """A train.* key missing from a stage's params would let DVC skip a rerun and keep
    results trained under the old value (train.fast_kernels once was missing)."""
    from xray_hpo.config import RUNTIME_TRAIN_KEYS, TrainConfig

    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    settings = {f"train.{key}" for key in TrainConfig.model_fields
                if key not in RUNTIME_TRAIN_KEYS}
    for stage in ("tune", "train_best"):
        listed = {p for p in pipeline["stages"][stage]["params"] if isinstance(p, str)}
        assert settings <= listed, f"{stage}: params missing {sorted(settings - listed)}"
