"""Start-up cost of the plugin (import + register_models + register_commands) and of whole `llm` commands, vs llm-mistral 0.16."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BASELINE_VENV,
    REPO,
    baseline_python,
    clean_env,
    code_state,
    fmt_ms,
    machine_line,
    median,
    package_version,
    project_bin,
    project_python,
    user_dir,
    venv_bin,
)

# Run in a fresh interpreter by `measure_hooks`: llm (and llm.cli, as every `llm` command has it) is
# imported first, untimed; then the plugin module is imported and its two hooks called, timed.
HOOKS_CHILD = r"""
import json, sys, time
module_name = sys.argv[1]
import click, llm, llm.cli
assert module_name not in sys.modules
registered = []
before = set(sys.modules)
def register(model, async_model=None, aliases=None):
    registered.append(model.model_id)
w0, c0 = time.perf_counter(), time.process_time()
module = __import__(module_name)
w1, c1 = time.perf_counter(), time.process_time()
module.register_models(register)
w2, c2 = time.perf_counter(), time.process_time()
module.register_commands(click.Group("llm"))
w3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({
    "wall": {"import": w1 - w0, "register_models": w2 - w1, "register_commands": w3 - w2, "total": w3 - w0},
    "cpu": {"import": c1 - c0, "register_models": c2 - c1, "register_commands": c3 - c2, "total": c3 - c0},
    "models": len(registered),
    "new_modules": len(set(sys.modules) - before),
    "new_top_level": sorted({m.split(".")[0] for m in set(sys.modules) - before}),
}))
"""


def measure_hooks(python: str, module: str, home: str) -> dict:
    """One fresh interpreter: the timings printed by HOOKS_CHILD."""
    env = clean_env("", home)  # LLM_LOAD_PLUGINS= : llm loads no plugin itself; the child imports the module by hand
    result = subprocess.run([python, "-c", HOOKS_CHILD, module], env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"hooks child for {module} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def byte_compile(python: str) -> None:
    """Write the .pyc files of the hooks module and the package, as a wheel install does (this environment may
    set PYTHONDONTWRITEBYTECODE, and a stale or missing .pyc would time the compiler, not the plugin)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([python, "-m", "compileall", "-q", "llm_mistral_suite.py", "_llm_mistral_suite"],
                   cwd=REPO, env=env, check=True)


def run_command(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + sys of the child, from RUSAGE_CHILDREN) seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr.decode()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=31, help="runs per configuration (median reported), >= 15")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args()

    base_python = baseline_python()
    ours_python = project_python()
    home = user_dir()
    byte_compile(ours_python)
    print(machine_line())
    print(code_state())
    print(f"ours: llm {package_version(ours_python, 'llm')}, llm-mistral-suite {package_version(ours_python, 'llm-mistral-suite')}"
          f"; baseline: llm {package_version(base_python, 'llm')}, llm-mistral {package_version(base_python, 'llm-mistral')}"
          f", mistralai {package_version(base_python, 'mistralai')}")

    # 1. import + register_models + register_commands, fresh interpreter each run, alternating.
    subjects = {"llm-mistral-suite": (ours_python, "llm_mistral_suite"), "llm-mistral 0.16": (base_python, "llm_mistral")}
    hooks: dict[str, list[dict]] = {name: [] for name in subjects}
    for python, module in subjects.values():  # warm-up: .pyc files and page cache
        measure_hooks(python, module, home)
    for _ in range(args.runs):
        for name, (python, module) in subjects.items():
            hooks[name].append(measure_hooks(python, module, home))

    print(f"\n## Hooks: import + register_models + register_commands (after `import llm, llm.cli`), median of {args.runs}")
    print("| plugin | import | register_models | register_commands | total wall (min–max) | total CPU | models registered "
          "| modules it imports (top-level packages) |")
    print("|---|---|---|---|---|---|---|---|")
    summary: dict = {"hooks": {}, "commands": {}}
    for name, runs in hooks.items():
        row = {part: median([r["wall"][part] for r in runs]) for part in ("import", "register_models", "register_commands", "total")}
        row["cpu_total"] = median([r["cpu"]["total"] for r in runs])
        totals = [r["wall"]["total"] for r in runs]
        summary["hooks"][name] = {**row, "runs": runs}
        tops = runs[0]["new_top_level"]
        modules = f"{runs[0]['new_modules']} ({', '.join(tops[:8]) or '-'}{', ...' if len(tops) > 8 else ''})"
        print(f"| {name} | {fmt_ms(row['import'])} | {fmt_ms(row['register_models'])} | {fmt_ms(row['register_commands'])} "
              f"| **{fmt_ms(row['total'])}** ({fmt_ms(min(totals))}–{fmt_ms(max(totals))}) | {fmt_ms(row['cpu_total'])} "
              f"| {runs[0]['models']} | {modules} |")
    ours = summary["hooks"]["llm-mistral-suite"]
    theirs = summary["hooks"]["llm-mistral 0.16"]["total"]
    with_models = median([r["wall"]["import"] + r["wall"]["register_models"] for r in ours["runs"]])
    print(f"\nours: import {fmt_ms(ours['import'])} (budget 1.5 ms: {'PASS' if ours['import'] <= 0.0015 else 'FAIL'}); "
          f"import + register_models {fmt_ms(with_models)} (budget 10 ms: {'PASS' if with_models <= 0.010 else 'FAIL'}); "
          f"all three {fmt_ms(ours['total'])}; llm-mistral 0.16 {fmt_ms(theirs)} ({theirs / ours['total']:.0f}x ours)")

    # 2. Whole commands: wall and CPU of `llm --help` and `llm models`, with and without each plugin.
    configs = {
        "ours venv, no plugins (LLM_LOAD_PLUGINS=)": (project_bin("llm"), ""),
        "ours venv, LLM_LOAD_PLUGINS=llm-mistral-suite": (project_bin("llm"), "llm-mistral-suite"),
        "baseline venv, no plugins (LLM_LOAD_PLUGINS=)": (str(venv_bin(BASELINE_VENV, "llm")), ""),
        "baseline venv, LLM_LOAD_PLUGINS=llm-mistral": (str(venv_bin(BASELINE_VENV, "llm")), "llm-mistral"),
    }
    commands = {"llm --help": ["--help"], "llm models": ["models"]}
    figures: dict = {(c, k): ([], []) for c in commands for k in configs}
    for command, argv in commands.items():
        for llm_bin, plugins in configs.values():  # warm-up (.pyc, page cache)
            run_command([llm_bin, *argv], clean_env(plugins, home))
        for _ in range(args.runs):
            for config, (llm_bin, plugins) in configs.items():
                wall, cpu = run_command([llm_bin, *argv], clean_env(plugins, home))
                figures[command, config][0].append(wall)
                figures[command, config][1].append(cpu)

    print(f"\n## Whole commands, median of {args.runs} (configurations alternating within each round)")
    print("| command | configuration | wall | CPU (user+sys) | plugin's added wall | plugin's added CPU "
          "(interquartile range) |")
    print("|---|---|---|---|---|---|")
    names = list(configs)
    for command in commands:
        for i, config in enumerate(names):
            walls, cpus = figures[command, config]
            if i % 2:  # "with plugin" rows: the median of the per-round differences to the row above
                ref_walls, ref_cpus = figures[command, names[i - 1]]
                added_wall = median([a - b for a, b in zip(walls, ref_walls)])
                added_cpu = median([a - b for a, b in zip(cpus, ref_cpus)])
                low, _, high = statistics.quantiles([a - b for a, b in zip(cpus, ref_cpus)], n=4)
                added = f"{added_wall * 1000:+.1f} ms | {added_cpu * 1000:+.1f} ms ({low * 1000:+.0f} to {high * 1000:+.0f} ms)"
            else:
                added_wall = added_cpu = None
                added = "(reference) | (reference)"
            print(f"| `{command}` | {config} | {fmt_ms(median(walls))} | {fmt_ms(median(cpus))} | {added} |")
            summary["commands"][f"{command} / {config}"] = {
                "wall": median(walls), "cpu": median(cpus), "added_wall": added_wall, "added_cpu": added_cpu,
                "walls": walls, "cpus": cpus,
            }
    shutil.rmtree(home, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    os.chdir(REPO)
    main()
