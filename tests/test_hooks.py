"""The hooks module and the package's shape: cheap imports, lazy commands, one-way imports, damage reported."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import llm_mistral_suite

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "_llm_mistral_suite"
HEAVY = ("httpx", "httpx_sse", "llama_cpp", "jinja2", "numpy", "sqlite_utils")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def package_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every file of the package."""
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def imported_package_modules(name: str, path: Path) -> set[str]:
    """The package modules that ``name`` imports at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import x` may import a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in package_modules() else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in package_modules() and module != name}


def test_importing_the_hooks_module_loads_nothing_of_the_package():
    out = run_python(
        "import sys, llm, llm.cli; before = set(sys.modules); import llm_mistral_suite; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('_llm_mistral_suite') or m in "
        f"{HEAVY!r}))"
    )
    assert out == "[]"


def test_llm_help_imports_no_model_code():
    out = run_python(
        "import sys; from click.testing import CliRunner; from llm.cli import cli; "
        "result = CliRunner().invoke(cli, ['--help']); assert result.exit_code == 0, result.output; "
        "assert 'mistral' in result.output; "
        "print(sorted(m for m in sys.modules if m.startswith('_llm_mistral_suite')))"
    )
    assert out == "[]"


def test_mistral_help_lists_every_subcommand():
    from llm.cli import cli

    result = CliRunner().invoke(cli, ["mistral", "--help"])
    assert result.exit_code == 0, result.output
    for name in llm_mistral_suite.SUBCOMMANDS:
        assert f"  {name}" in result.output
    for name in llm_mistral_suite.SUBCOMMANDS:
        sub = CliRunner().invoke(cli, ["mistral", name, "--help"])
        assert sub.exit_code == 0, sub.output


def test_every_subcommand_target_is_a_click_command():
    import importlib

    for module, attribute in llm_mistral_suite.SUBCOMMANDS.values():
        assert isinstance(getattr(importlib.import_module(module), attribute), click.Command)


def test_package_modules_import_nothing_heavy_at_import_time():
    names = sorted(package_modules())
    out = run_python(
        "import sys, importlib, llm, llm.cli; before = set(sys.modules); "
        f"[importlib.import_module(n) for n in {names!r}]; "
        f"print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY!r}))"
    )
    assert out == "[]"


def test_every_package_file_opens_with_a_one_line_docstring_and_stays_small():
    for name, path in package_modules().items():
        tree = ast.parse(path.read_text())
        docstring = ast.get_docstring(tree, clean=False)
        assert docstring, f"{path} has no docstring"
        assert "\n" not in docstring.split("\n\n")[0].strip() or name == "_llm_mistral_suite", path
        first = path.read_text().splitlines()[0]
        assert first.startswith('"""') and len(first) > 10, f"{path}: the first line should say what it is for"
        assert len(path.read_text().splitlines()) <= 650, f"{path} has grown past ~600 lines"


def test_imports_between_package_files_are_acyclic():
    graph = {name: imported_package_modules(name, path) for name, path in package_modules().items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", "import cycle: " + " -> ".join(trail + [node])
        state[node] = "active"
        for target in sorted(graph[node]):
            visit(target, trail + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])
    for name, targets in graph.items():  # commands are the end of the flow: nothing imports them
        assert not {t for t in targets if t.endswith(".commands")}, f"{name} imports a commands module"


def test_hooks_module_is_thin():
    assert len((ROOT / "llm_mistral_suite.py").read_text().splitlines()) < 200


def test_a_damaged_package_is_reported_not_raised(monkeypatch, capsys):
    monkeypatch.setattr(llm_mistral_suite, "_reported", set())
    monkeypatch.setitem(sys.modules, "_llm_mistral_suite.chat", None)  # `import` of it now raises ImportError
    registered = []
    llm_mistral_suite.register_models(lambda model, *args, **kwargs: registered.append(model.model_id))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "damaged" in lines[0] and "llm install -U llm-mistral-suite" in lines[0], err
    assert "llamafile-server" in registered  # the other parts still register
    llm_mistral_suite.register_models(lambda *args, **kwargs: None)
    assert capsys.readouterr().err == ""  # said once per process


def test_a_damaged_command_module_is_one_clear_error(monkeypatch):
    from llm.cli import cli

    monkeypatch.setitem(sys.modules, "_llm_mistral_suite.commands", None)
    result = CliRunner().invoke(cli, ["mistral", "models"])
    assert result.exit_code == 1
    assert "Error: llm-mistral-suite is damaged" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("hook, module, function", [
    ("register_models", "_llm_mistral_suite.catalog", "load_catalog"),
    ("register_embedding_models", "_llm_mistral_suite.embeddings", "embedding_models"),
])
def test_hooks_never_raise_even_when_a_part_fails(monkeypatch, hook, module, function, capsys):
    import importlib

    monkeypatch.setattr(llm_mistral_suite, "_reported", set())

    def broken() -> list:
        raise RuntimeError("boom")

    monkeypatch.setattr(importlib.import_module(module), function, broken)
    getattr(llm_mistral_suite, hook)(lambda *args, **kwargs: None)
    assert "boom" in capsys.readouterr().err
