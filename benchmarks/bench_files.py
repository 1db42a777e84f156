"""The hooks' cost with the user's files present (servers, local registry, llm-llama-cpp's models.json, a refreshed
catalog), now that every field is checked (issue 10), side by side with the code before: a git ref of this repo."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, WORK, clean_env, code_state, fmt_ms, machine_line, median, project_python  # noqa: E402

# A fresh interpreter per run: llm and llm.cli imported untimed (every `llm` command has them), then the plugin's
# import and both model hooks timed. ``sys.argv[1]`` is the folder holding the code to measure, put first on sys.path.
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import click, llm, llm.cli
registered = []
def register(model, async_model=None, aliases=()):
    registered.append(model.model_id)
clock = time.process_time  # CPU time: the machine is shared, wall time measures the neighbours too
w0, t0 = time.perf_counter(), clock()
import llm_mistral_suite as module
t1 = clock()
module.register_models(register)
t2 = clock()
module.register_embedding_models(register)
t3, w3 = clock(), time.perf_counter()
print(json.dumps({"import": t1 - t0, "register_models": t2 - t1, "register_embedding_models": t3 - t2,
                  "total": t3 - t0, "wall": w3 - w0, "models": len(registered), "file": module.__file__}))
"""


def populate(home: Path) -> None:
    """What a user of a few months might have: 6 servers, 6 local models, 3 of llm-llama-cpp's, 60 cached cards."""
    servers = {f"box-{i}": {"url": f"http://127.0.0.1:{8000 + i}/v1", "model": f"m{i}", "key_name": None,
                            "aliases": [f"b{i}", f"box{i}"], "embedding": i == 5} for i in range(6)}
    (home / "mistral-suite-servers.json").write_text(json.dumps(servers))
    local = {f"model-{i}": {"path": f"/models/model-{i}.gguf", "aliases": [f"m-{i}"], "download": "mistral-7b"}
             for i in range(6)}
    (home / "mistral-suite-local.json").write_text(json.dumps({"models": local}))
    (home / "llama-cpp").mkdir()
    (home / "llama-cpp" / "models.json").write_text(json.dumps(
        {f"theirs-{i}": {"path": f"/models/theirs-{i}.gguf", "aliases": []} for i in range(3)}))
    capabilities = {"completion_chat": True, "completion_fim": False, "function_calling": True, "fine_tuning": False,
                    "vision": True, "classification": False, "audio": False, "reasoning": False}
    cards = [{"id": f"model-{i}-2508", "object": "model", "created": 1750000000, "owned_by": "mistralai",
              "capabilities": capabilities, "name": f"model-{i}-2508", "description": "A model", "max_context_length":
              131072, "aliases": [f"model-{i}-latest"], "deprecation": None, "deprecation_replacement_model": None,
              "default_model_temperature": 0.3, "type": "base"} for i in range(60)]
    (home / "mistral-suite-models.json").write_text(json.dumps({"fetched": "2026-12-01T00:00:00+00:00", "data": cards}))


def copy_working_tree() -> Path:
    """The hooks module and package as they are now, in a folder of their own: both versions are then imported the
    same way (a sys.path entry), not one through the editable install's import finder."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="code-now-", dir=WORK))
    shutil.copy2(REPO / "llm_mistral_suite.py", folder)
    shutil.copytree(REPO / "_llm_mistral_suite", folder / "_llm_mistral_suite",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([project_python(), "-m", "compileall", "-q", str(folder)], check=True)
    return folder


def extract(ref: str) -> Path:
    """The hooks module and package as they were at ``ref``, in a folder of their own."""
    folder = Path(tempfile.mkdtemp(prefix=f"code-{ref}-", dir=WORK))
    archive = subprocess.run(["git", "archive", ref, "llm_mistral_suite.py", "_llm_mistral_suite"], cwd=REPO,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(folder)
    subprocess.run([project_python(), "-m", "compileall", "-q", str(folder)], check=True)  # as a wheel install does
    return folder


def measure(code: str, home: Path) -> dict:
    result = subprocess.run([project_python(), "-c", CHILD, code], env=clean_env("", str(home)),
                            capture_output=True, text=True)
    if result.returncode or "Warning" in result.stderr or "Error" in result.stderr:
        sys.exit(f"child failed or complained:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="1ddb66f", help="git ref of the code to compare with (before issue 10)")
    parser.add_argument("--runs", type=int, default=31)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    versions = {"this code": str(copy_working_tree()), f"before ({args.baseline})": str(extract(args.baseline))}
    homes = {"empty user dir": Path(tempfile.mkdtemp(prefix="llm-user-", dir=WORK)),
             "user files present": Path(tempfile.mkdtemp(prefix="llm-user-", dir=WORK))}
    populate(homes["user files present"])
    runs: dict[tuple[str, str], list[dict]] = {(v, h): [] for v in versions for h in homes}
    for key in runs:  # warm-up
        measure(versions[key[0]], homes[key[1]])
    order = list(runs)
    shuffle = __import__("random").Random(0).shuffle
    for _ in range(args.runs):
        shuffle(order)  # a new order each round: no configuration always runs first, or right after another
        for version, home in order:
            runs[(version, home)].append(measure(versions[version], homes[home]))
    print(machine_line())
    print(f"This code: {code_state()}; {args.runs} runs each, medians of CPU time (process_time) per step.")
    print(f"Load average at the end: {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}.\n")
    print("| code | user dir | import | register_models | register_embedding_models | total CPU | total wall | models |")
    print("|---|---|---|---|---|---|---|---|")
    for (version, home), results in runs.items():
        assert all(r["file"].startswith(versions[version]) for r in results)
        cells = [fmt_ms(median([r[step] for r in results]))
                 for step in ("import", "register_models", "register_embedding_models", "total", "wall")]
        print(f"| {version} | {home} | " + " | ".join(cells) + f" | {results[0]['models']} |")
    now, before = versions
    print("\n| user dir | this code minus before, total CPU: median of the per-round differences | interquartile range |")
    print("|---|---|---|")
    for home in homes:
        differences = [a["total"] - b["total"] for a, b in zip(runs[(now, home)], runs[(before, home)])]
        low, _, high = __import__("statistics").quantiles(differences, n=4)
        print(f"| {home} | {'+' if median(differences) >= 0 else ''}{fmt_ms(median(differences))} | "
              f"{fmt_ms(low)} to {fmt_ms(high)} |")


if __name__ == "__main__":
    main()
