"""One direction of imports, read from the source with ast (the imports a module makes, and the
ones those make, within the project):

- pipelines never imports crossres_dist, and the installed library never imports tools/;
- a section of the configuration (a package's settings.py, and config.py that composes them)
  is plain values and their checks: it reaches no component, only the registry it checks its
  names against (models', heads', the pipelines' degradation steps), and the pipelines no
  further than that registry (no loader, no DALI);
- the models import nothing of the pipelines or of distribution;
- training, checkpointing, distribution and data never import evaluation (eval/);
- evaluation never imports training or the configuration (its command, the entry point that
  wires a configuration to it, may);
- weights, data, checkpointing and distribution sit below training;
- the verification sets (verification/) serve both, and import neither, nor the configuration;
- no two packages import each other.

An import under ``if TYPE_CHECKING:`` is for the reader (an annotation) and runs nowhere: it is
not a dependency. The trainer's and the networks' builders annotate their argument with the
composed ``Config`` that way, as config.py imports training's sections.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node of `tree` but those under ``if TYPE_CHECKING:`` (annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            type_only = isinstance(child, ast.If) and ast.unparse(child.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            )
            if not type_only:
                todo.append(child)


def imports_of(path: Path) -> set[str]:
    """The project modules `path` imports (absolute, relative, and inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("crossres_dist", "pipelines")}


MODULES = {
    module_name(p): p
    for root in ("crossres_dist", "pipelines")
    for p in sorted((REPO / root).rglob("*.py"))
}


def reaches(start: str) -> set[str]:
    """Every project module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        for target in imports_of(MODULES[current]) if current in MODULES else ():
            while target and target not in MODULES:  # `from pkg import name`: the package
                target = target.rpartition(".")[0]
            if target and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen - {start}


def package(name: str) -> str:
    """The layout's package a module belongs to: crossres_dist.training, pipelines ..."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "crossres_dist" and len(parts) > 1 else parts[0]


def in_package(*names: str) -> list[str]:
    return [m for m in MODULES if package(m) in names or m in names]


# The entry points that wire a configuration to a package: the only places allowed to.
ENTRY_POINTS = ("crossres_dist.eval.command", "crossres_dist.evaluate", "crossres_dist.train")
EVALUATION = [m for m in in_package("crossres_dist.eval") if m not in ENTRY_POINTS]
# The configuration: each package's section (settings.py) and config.py, which composes them.
SECTION_MODULES = ["crossres_dist.config", *[m for m in MODULES if m.endswith(".settings")]]
RULES = [
    *[(m, "crossres_dist", "pipelines sits below crossres_dist") for m in in_package("pipelines")],
    *[(m, "tools", "the installed library does not import the repository's tools") for m in MODULES],
    *[(m, "pipelines", "models know nothing of the pipelines") for m in in_package("crossres_dist.models")],
    *[(m, "crossres_dist.distributed", "model code is free of distribution") for m in in_package("crossres_dist.models")],
    *[(m, f"pipelines.{part}", "a section reaches the pipelines' registry of steps, no further") for m in SECTION_MODULES for part in ("loader", "dali_pipeline", "torchvision_twin", "sources", "packed", "plans")],
    *[(m, f"crossres_dist.{component}", "a section is values and checks, not a component") for m in SECTION_MODULES for component in ("training.trainer", "training.validation", "data.run_data", "data.views", "distributed.bootstrap", "checkpointing.manager", "weights", "eval", "verification")],
    *[(m, "crossres_dist.eval", "training does not import evaluation") for m in in_package("crossres_dist.training", "crossres_dist.checkpointing", "crossres_dist.distributed", "crossres_dist.data")],
    *[(m, "crossres_dist.training", "evaluation does not import training") for m in EVALUATION],
    *[(m, "crossres_dist.config", "evaluation does not import the configuration") for m in EVALUATION],
    *[(m, "crossres_dist.training", "weights, data and checkpoints sit below training") for m in in_package("crossres_dist.weights", "crossres_dist.data", "crossres_dist.checkpointing", "crossres_dist.distributed")],
    *[(m, forbidden, "verification sets serve training and evaluation alike") for m in in_package("crossres_dist.verification") for forbidden in ("crossres_dist.training", "crossres_dist.eval", "crossres_dist.config")],
    # Below data (which reads the sets for validation) and weights (the networks): the decode
    # check is data's, the pickle allow-list sits below both (crossres_dist.pickle_globals).
    *[(m, forbidden, "verification sits below data and the networks") for m in in_package("crossres_dist.verification") for forbidden in ("crossres_dist.data", "crossres_dist.weights", "crossres_dist.models", "crossres_dist.checkpointing")],
]  # fmt: skip


@pytest.mark.parametrize("module,forbidden,why", RULES, ids=[f"{m}-{f}" for m, f, _ in RULES])
def test_imports_run_one_way(module, forbidden, why):
    bad = sorted(m for m in reaches(module) if m == forbidden or m.startswith(forbidden + "."))
    assert not bad, f"{module} imports {', '.join(bad)}: {why}"


def package_imports() -> dict[str, set[str]]:
    """Which of the layout's packages each package imports (directly, inside functions too)."""
    found: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for target in imports_of(path):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and package(target) != package(name):
                found.setdefault(package(name), set()).add(package(target))
    return found


def test_no_two_packages_import_each_other():
    """One direction between any two packages: a package that another imports never imports it
    back, not even inside a function."""
    found = package_imports()
    both = sorted(
        f"{a} <-> {b}"
        for a, targets in found.items()
        for b in targets
        if a < b and a in found.get(b, ())
    )
    assert not both, f"these packages import each other: {', '.join(both)}"


def test_the_rules_see_real_imports():
    assert "crossres_dist.distributed" in reaches("crossres_dist.training.validation")
    assert "pipelines.sources" in reaches("crossres_dist.training.trainer")
    assert "crossres_dist.eval.features" in reaches("crossres_dist.evaluate")
    assert package("crossres_dist.training.trainer") == "crossres_dist.training"
    assert "crossres_dist.training.trainer" in in_package("crossres_dist.training")
    assert "crossres_dist.verification" in package_imports()["crossres_dist.data"]


def test_models_and_pipelines_agree_on_the_released_networks_mean():
    from crossres_dist.models import MEAN_BGR as MODEL_MEAN
    from pipelines.plans import MEAN_BGR as PIPELINE_MEAN

    assert MODEL_MEAN == PIPELINE_MEAN


def test_no_function_is_longer_than_eighty_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{name}.{node.name} ({lines} lines)")
    assert not long, f"split these into parts that each do one thing: {', '.join(long)}"


def test_the_trainer_orchestrates_and_stays_short():
    """Components own their parts (validation.Validator, state.TrainState,
    manager.resume_point, step_control.Cadence ...); the trainer wires them: at most 500 lines,
    train() at most 60."""
    path = REPO / "crossres_dist" / "training" / "trainer.py"
    assert len(path.read_text().splitlines()) <= 500
    train = next(
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "train"
    )
    assert train.end_lineno - train.lineno + 1 <= 60


def test_architectures_are_named_only_in_their_registry():
    """Each family registers itself (crossres_dist/models/); no code elsewhere picks one by name
    (comments and docstrings may name them for readers)."""
    from crossres_dist.models import ARCHITECTURES

    named = []
    for name, path in MODULES.items():
        if name.startswith("crossres_dist.models"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and any(arch in node.value for arch in ARCHITECTURES)
            ):
                named.append(f"{name}:{node.lineno} {node.value!r}")
    assert set(ARCHITECTURES) >= {"seresnet", "iresnet"}
    assert not named, f"ask the registry (crossres_dist/models/) instead: {', '.join(named)}"


def test_each_section_lives_in_the_package_that_owns_it():
    """config.py composes: it defines the job's own section (run) and no other, and stays under
    350 lines; every other section is a package's settings.py, with its checks (`problem`)."""
    from crossres_dist.config import SECTIONS

    path = REPO / "crossres_dist" / "config.py"
    assert len(path.read_text().splitlines()) < 350
    homes = {name: cls.__module__ for name, cls in SECTIONS.items()}
    assert homes.pop("run") == "crossres_dist.config"
    assert all(module.endswith(".settings") for module in homes.values()), homes
    assert all(callable(getattr(cls, "problem", None)) for cls in SECTIONS.values())


def module_cycles() -> list[list[str]]:
    """Groups of modules that import one another (directly or round a longer circle), counting
    imports inside functions and for annotations alike: a circle inside a package too."""
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in MODULES else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in MODULES and t != name}

    return circles(graph)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of nodes of `graph` (node -> the nodes it imports) that reach one another."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return seen

    reached = {name: reach(name) for name in graph}
    found = {
        tuple(sorted({m} | {x for x in reached[m] if m in reached[x]}))
        for m in graph
        if m in reached[m]
    }
    return [list(group) for group in sorted(found)]


def test_no_two_modules_import_each_other():
    """A section and its registry, or two modules of one package, import in one direction (the
    registry never reaches back for the section's annotations or with a late import)."""
    assert module_cycles() == []
    # It finds a circle where there is one, a longer one too, and nothing else.
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a", "d"}, "d": {"e"}, "e": {"c"}, "f": set()}
    assert circles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_no_test_module_imports_another():
    """What several test modules share lives in tests/conftest.py or tests/fixtures/, so that a
    test module (and its private helpers) can change without breaking another."""
    tests = REPO / "tests"
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [
                f"{path.relative_to(REPO)} imports {m}"
                for m in modules
                if m.startswith("tests.") and m.rsplit(".", 1)[-1].startswith("test_")
            ]
    assert not found, found
