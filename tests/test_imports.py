"""The package's shape: no import circles (imports inside functions and type-only ones count), and a torch-free core."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentwalk.toy.soundtrack import drum_track, write_wav

PACKAGE = Path(__file__).resolve().parents[1] / "latentwalk"
HEAVY = ("torch", "diffusers", "transformers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> latentwalk modules it imports anywhere in its text (top level, functions, TYPE_CHECKING)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from latentwalk import api` imports the module latentwalk.api
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan 1972), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "latentwalk.api" in graph["latentwalk.cli"]  # cli imports api inside its command functions
    assert "latentwalk.backends.base" in graph["latentwalk.backends.sd"]


def test_no_import_circles():
    found = circles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def loaded_after(code: str, cwd: Path | None = None) -> set[str]:
    """Which of HEAVY a fresh interpreter has loaded after running `code`."""
    check = f"{code}\nimport sys\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=cwd, env=os.environ | {"PYTHONPATH": str(PACKAGE.parent)})
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), out.stdout
    return set(filter(None, last[len("loaded:"):].split(",")))


def test_import_latentwalk_loads_no_torch():
    assert loaded_after("import latentwalk") == set()
    assert loaded_after("import latentwalk.api, latentwalk.cli, latentwalk.timeline, latentwalk.schedule, latentwalk.store") == set()


def test_the_core_commands_load_no_torch(tmp_path, monkeypatch):
    """--help, plan (text, json), beats with a cached analysis, store and timeline validation errors stay torch-free."""
    wav = write_wav(drum_track(120.0, 3), tmp_path / "drums.wav")
    timeline = tmp_path / "t.yaml"
    timeline.write_text(
        f"audio: {{path: {wav.name}, tracker: librosa}}\nfps: 8\nguidance: 5 + 2 * beat_phase\n"
        "keyframes:\n  - {beat: 0, prompt: a city at night, seed: 1}\n  - {beat: 8, prompt: a forest, seed: 2}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("keyframes:\n  - {time: 0, prompt: x, seed: 1}\nguidance: 200\n")
    (tmp_path / "store").mkdir()
    run = "from latentwalk.cli import main\nimport contextlib, io\n"
    calls = [
        "main(['--help'])",
        f"main(['plan', {str(timeline)!r}])",
        f"main(['plan', {str(timeline)!r}, '--json'])",
        f"main(['beats', {str(wav)!r}, '--tracker', 'librosa'])",  # the plan above cached this analysis
        f"main(['store', {str(tmp_path / 'store')!r}])",
        f"assert main(['plan', {str(bad)!r}]) == 2",
    ]
    env_cache = f"import os\nos.environ['LATENTWALK_CACHE'] = {str(tmp_path / 'cache')!r}\n"
    for call in calls:
        code = env_cache + run + f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        {call}\n    except SystemExit:\n        pass"
        assert loaded_after(code) == set(), call
