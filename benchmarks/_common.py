"""Shared helpers of the benchmarks: paths, the llm-mistral 0.16 baseline venv, isolated environments, stats."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"  # gitignored
BASELINE_VENV = WORK / "baseline-venv"
BASELINE_PACKAGES = ["llm==0.36", "llm-mistral==0.16"]


def venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def project_python() -> str:
    """The interpreter running this script: the project venv (``python benchmarks/bench_X.py``)."""
    return sys.executable


def project_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _venv_python(venv: Path, probe: str, packages: list[str], what: str) -> str:
    """The interpreter of ``venv``, created with ``packages`` first when it cannot run ``probe``."""
    python = venv_bin(venv, "python")
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
        return str(python)
    print(f"Creating {venv} ({what}) ...", file=sys.stderr)
    WORK.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return str(python)


def baseline_python() -> str:
    """The baseline venv's interpreter (llm 0.36 + llm-mistral 0.16), created on first use."""
    return _venv_python(BASELINE_VENV, "import llm, llm_mistral", list(BASELINE_PACKAGES),
                        f"the baseline: {' '.join(BASELINE_PACKAGES)}")


SUITE_VENV = WORK / "suite-venv"


def suite_python() -> str:
    """A venv with llm 0.36 and this plugin only (an editable install of this checkout), as a user's
    ``llm install llm-mistral-suite`` gives: no test extras (numpy, which sqlite_utils then imports on every
    ``llm`` command, llama-cpp-python). Created on first use."""
    return _venv_python(SUITE_VENV, "import llm, llm_mistral_suite, httpx, httpx_sse", ["llm==0.36", "-e", str(REPO)],
                        "llm==0.36 and this checkout, editable")


def package_version(python: str, distribution: str) -> str:
    code = f"from importlib.metadata import version; print(version({distribution!r}))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return result.stdout.strip() or "?"


def clean_env(load_plugins: str | None, user_dir: str, **extra: str) -> dict[str, str]:
    """The environment of a measured child: own llm user dir, no keys, no proxies, chosen plugins only."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().endswith("_PROXY")
        and key not in {"LLM_MISTRAL_KEY", "MISTRAL_API_KEY", "LLM_MISTRAL_BASE_URL", "LLM_LOAD_PLUGINS", "PYTHONPATH",
                       "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME"}
    }
    env["LLM_USER_PATH"] = user_dir
    env["NO_PROXY"] = "127.0.0.1,localhost"
    if load_plugins is not None:
        env["LLM_LOAD_PLUGINS"] = load_plugins
    env.update(extra)
    return env


def user_dir() -> str:
    """An empty llm user directory (no keys.json, no model caches) for the children."""
    WORK.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="llm-user-", dir=WORK)


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine_line() -> str:
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}"
    )


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def code_state() -> str:
    """Which plugin code was measured: HEAD, whether the code differs from it, and one hash of every file of
    the hooks module and the package (by path and content)."""
    import hashlib

    files = [REPO / "llm_mistral_suite.py", *sorted((REPO / "_llm_mistral_suite").rglob("*.py"))]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "llm_mistral_suite.py", "_llm_mistral_suite"],
                           cwd=REPO).returncode
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    return (f"llm_mistral_suite.py + _llm_mistral_suite/ ({len(files)} files) at {head or '?'}"
            f"{' + uncommitted edits' if dirty else ''} (sha256 {digest.hexdigest()[:12]})")
