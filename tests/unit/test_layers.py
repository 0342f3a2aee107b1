"""The package's layers: the pure modules import without Ray, no module imports from a
layer above its own, and no import circle crosses a package (read from the source,
lazy imports included, imports for type checking left out)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("qrt_ray", "policies", "actors")

# Everything but the client side (client, farm, CLI, demo, primitives) and the Ray
# shells of the actors: the logic, the models and the store need no Ray at all.
PURE = [
    "qrt_ray",
    "qrt_ray.aer",
    "qrt_ray.arguments",
    "qrt_ray.circuits",
    "qrt_ray.compiler",
    "qrt_ray.config",
    "qrt_ray.errors",
    "qrt_ray.intake",
    "qrt_ray.lifecycle",
    "qrt_ray.mitigation",
    "qrt_ray.models",
    "qrt_ray.names",
    "qrt_ray.reports",
    "qrt_ray.store",
    "qrt_ray.policies.canary",
    "qrt_ray.policies.jobflow",
    "qrt_ray.policies.jobs",
    "qrt_ray.policies.fidelity",
    "qrt_ray.policies.placement",
    "qrt_ray.policies.placer",
    "qrt_ray.policies.rollout",
    "qrt_ray.actors.admission",
    "qrt_ray.actors.calibration",
    "qrt_ray.actors.collector",
    "qrt_ray.actors.compile_stage",
    "qrt_ray.actors.device",
    "qrt_ray.actors.device_queue",
    "qrt_ray.actors.device_view",
    "qrt_ray.actors.executor",
    "qrt_ray.actors.probes",
    "qrt_ray.actors.rollouts",
    "qrt_ray.actors.ports",
    "qrt_ray.actors.scheduler",
    "qrt_ray.actors.snapshot_poll",
    "qrt_ray.actors.job_telemetry",
    "qrt_ray.actors.canary_metrics",
    "qrt_ray.logs",
    "qrt_ray.tracing",
    "qrt_ray.tuning",
]


def test_pure_modules_import_with_ray_missing() -> None:
    probe = (
        "import sys, importlib\n"
        "sys.modules['ray'] = None  # any `import ray` now fails\n"
        f"for name in {PURE!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_the_probe_would_catch_a_module_that_needs_ray() -> None:
    probe = "import sys\nsys.modules['ray'] = None\nimport qrt_ray.farm\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "import of ray halted" in done.stderr


def _modules() -> dict[str, Path]:
    out = {}
    for base in SOURCES:
        for path in (ROOT / base).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if base != "qrt_ray":  # installed under the qrt_ray namespace
                name = f"qrt_ray.{name}"
            out[name.removesuffix(".__init__")] = path
    return out


# Lowest first. A module may import from its own layer and the ones below, never above:
# the models know nothing of the store, policies nothing of actors, actors nothing of
# the client. The longest matching prefix decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "qrt_ray.errors",
            "qrt_ray.names",
            "qrt_ray.arguments",
            "qrt_ray.lifecycle",
            "qrt_ray.versions",
            "qrt_ray.private",
            "qrt_ray.render",
            "qrt_ray.models",
            "qrt_ray.profile",
            "qrt_ray.dynamic",
            "qrt_ray.plots",
            "qrt_ray.logs",
            "qrt_ray.tracing",
            "qrt_ray.tuning",
        ),
    ),
    (
        "core",
        (
            "qrt_ray.config",
            "qrt_ray.access",
            "qrt_ray.intake",
            "qrt_ray.mitigation",
            "qrt_ray.store",
            "qrt_ray.circuits",
            "qrt_ray.compiler",
            "qrt_ray.noise",
            "qrt_ray.calibration",
            "qrt_ray.drift",
            "qrt_ray.fidelity",
            "qrt_ray.results",
            "qrt_ray.reports",
            "qrt_ray.metrics",
            "qrt_ray.slo",
            "qrt_ray.dashboards",
            "qrt_ray.aer",
            "qrt_ray.workloads",
        ),
    ),
    ("policies", ("qrt_ray.policies",)),
    ("actors", ("qrt_ray.actors", "qrt_ray.evaluation")),
    (
        "entry",
        (
            "qrt_ray",
            "qrt_ray.client",
            "qrt_ray.remote",
            "qrt_ray.gateway",
            "qrt_ray.farm",
            "qrt_ray.cli",
            "qrt_ray.demo",
        ),
    ),
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of this project that ``path`` imports anywhere (not for type checking)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules}


def upward_imports() -> list[str]:
    """Every import of a module from a layer above its own."""
    modules = _modules()
    out = []
    for name, path in sorted(modules.items()):
        for target in sorted(_imports(path, modules)):
            if layer_of(target) > layer_of(name):  # type: ignore[operator]
                out.append(f"{name} -> {target}")
    return out


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    assert [m for m in _modules() if layer_of(m) is None] == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    assert len(_modules()) > 60  # the sources were read
    assert upward_imports() == []


def test_the_layer_check_would_catch_an_upward_import() -> None:
    assert (
        layer_of("qrt_ray.models")
        < layer_of("qrt_ray.policies.placer")
        < layer_of("qrt_ray.actors.device")
    )
    assert layer_of("qrt_ray.actors.device") < layer_of("qrt_ray.farm")
    assert layer_of("qrt_ray.intake.scan") == layer_of("qrt_ray.config")


def test_no_import_circle_crosses_a_package() -> None:
    modules = _modules()
    edges = {name: _imports(path, modules) for name, path in modules.items()}
    crossing = [g for g in _circles(edges) if len({_package(m) for m in g}) > 1]
    assert crossing == []


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "qrt_ray" and len(parts) > 2 else parts[0]


def test_the_circle_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_wheel_installs_everything_under_qrt_ray(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    leftover = not (ROOT / "build").exists()  # setuptools builds in the checkout
    try:
        built = subprocess.run(
            [*pip, "-w", str(tmp_path), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if leftover:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("qrt_ray-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"qrt_ray"}
    # every package folder of the checkout is in it, the mapped ones under qrt_ray
    for base in SOURCES:
        for init in (ROOT / base).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert (rel if base == "qrt_ray" else f"qrt_ray/{rel}") in names, rel
    assert "qrt_ray/configs/farm.yaml" in names and "qrt_ray/actors/device.py" in names


def test_qrt_ray_imported_from_the_checkout_finds_its_mapped_folders() -> None:
    """What a Ray worker does when its driver started in the checkout after a plain
    ``pip install .``: Ray puts the driver's directory first on the worker's path, so
    ``qrt_ray`` comes from the checkout, with no editable install's finder (``-S``: no
    ``.pth`` file runs). ``qrt_ray.actors`` and ``qrt_ray.policies`` must still be the
    checkout's top-level folders."""
    import sysconfig

    purelib = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {purelib!r}]; "
        "import qrt_ray.actors.requests, qrt_ray.policies.placement; "
        "print(qrt_ray.actors.requests.__file__); print(qrt_ray.policies.placement.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [
        str(ROOT / "actors" / "requests.py"),
        str(ROOT / "policies" / "placement.py"),
    ]
