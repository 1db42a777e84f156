"""Documents and audio (issue 12): a second question about the same PDF (the OCR cache), the memory of OCR on a
large PDF (uploaded from disk vs sent inline), and what the new hooks cost at start-up, this branch vs `main`.

The server is tests/fake_mistral.py's FakeMistral in this process (threads), answering every request after
``--latency`` seconds; each `llm` run is a fresh process with its own user dir.

    .venv/bin/python benchmarks/bench_media.py [--rounds 5] [--latency 3.0] [--big-mb 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import REPO, WORK, clean_env, code_state, machine_line  # noqa: E402

KEY = "sk-bench-not-a-key"

HOOKS_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import click, llm, llm.cli
t0 = time.perf_counter()
import llm_mistral_suite as hooks
t1 = time.perf_counter()
hooks.register_models(lambda *a, **k: None)
t2 = time.perf_counter()
if hasattr(hooks, "register_fragment_loaders"):
    hooks.register_fragment_loaders(lambda *a, **k: None)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "register_models": t2 - t1, "register_fragment_loaders": t3 - t2}))
"""


# `llm` with its own peak memory reported: VmHWM of the process after exec (ru_maxrss from wait4 would also count
# the pages of this process, forked before the exec).
LLM_CHILD = r"""
import atexit, sys
def peak():
    status = open("/proc/self/status").read()
    sys.stderr.write("PEAK_KB " + status.split("VmHWM:")[1].split()[0] + "\n")
atexit.register(peak)
from llm.cli import cli
cli(prog_name="llm")
"""


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """``llm ARGS``: (wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LLM_CHILD, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    err = result.stderr.decode()
    if result.returncode != 0 or "PEAK_KB" not in err:
        raise SystemExit(f"llm {' '.join(args)} failed: {err}")
    return wall, int(err.rsplit("PEAK_KB ", 1)[1].split()[0]) / 1024


def env_for(fake, user: Path, **extra: str) -> dict[str, str]:
    return clean_env("llm-mistral-suite", str(user), LLM_MISTRAL_BASE_URL=fake.base_url, LLM_MISTRAL_KEY=KEY,
                     **extra)


def second_question(fake, pdf: Path, rounds: int) -> list[tuple[str, float, float, float]]:
    """Two questions about one PDF through `-f mistral-ocr:`, with the cache and with the cache emptied between
    them (every OCR paid again): (variant, first question s, second question s, OCR requests per two questions)."""
    rows = []
    for variant in ("cached (default)", "no cache (emptied before the 2nd question)"):
        firsts, seconds, counts = [], [], []
        for _ in range(rounds):
            user = Path(tempfile.mkdtemp(prefix="llm-user-", dir=WORK))
            env = env_for(fake, user)
            before = len([r for r in fake.requests if r.route == "/v1/ocr"])
            args = ["-m", "mistral-small", "-f", f"mistral-ocr:{pdf}"]
            firsts.append(run_measured([*args, "What is the total?"], env)[0])
            if variant.startswith("no cache"):
                shutil.rmtree(user / "mistral-suite-cache", ignore_errors=True)
            seconds.append(run_measured([*args, "Who wrote it?"], env)[0])
            counts.append(len([r for r in fake.requests if r.route == "/v1/ocr"]) - before)
            shutil.rmtree(user, ignore_errors=True)
        rows.append((variant, statistics.median(firsts), statistics.median(seconds), statistics.median(counts)))
    return rows


def large_document(fake, big: Path, rounds: int) -> list[tuple[str, float, float, float, str]]:
    """`llm mistral ocr BIG --no-cache`, uploaded from disk (the default above 10 MB) vs inline as a data URI:
    (variant, wall s, peak RSS MB min, max, how the document travelled)."""
    rows = []
    for variant, extra in (("uploaded to /v1/files (default over 10 MB)", {}),
                           ("inline data URI (LLM_MISTRAL_INLINE_LIMIT_MB=100)", {"LLM_MISTRAL_INLINE_LIMIT_MB": "100"})):
        walls, peaks = [], []
        for _ in range(rounds):
            user = Path(tempfile.mkdtemp(prefix="llm-user-", dir=WORK))
            before = len(fake.requests)
            wall, rss = run_measured(["mistral", "ocr", str(big), "--no-cache"], env_for(fake, user, **extra))
            walls.append(wall)
            peaks.append(rss)
            routes = [r.route for r in fake.requests[before:]]
            shutil.rmtree(user, ignore_errors=True)
        how = "upload + OCR by file id + delete" if "/v1/files" in routes else "one OCR request"
        rows.append((variant, statistics.median(walls), min(peaks), max(peaks), how))
    user = Path(tempfile.mkdtemp(prefix="llm-user-", dir=WORK))
    help_wall, help_rss = run_measured(["mistral", "ocr", "--help"], env_for(fake, user))
    rows.append(("reference: `llm mistral ocr --help` (start-up only)", help_wall, help_rss, help_rss, "-"))
    return rows


def hooks_cost(runs: int) -> dict[str, dict[str, float]]:
    """import + register_models + register_fragment_loaders in fresh interpreters: this checkout vs `main`
    (exported with git archive), alternating; medians in ms."""
    main_dir = Path(tempfile.mkdtemp(prefix="main-", dir=WORK))
    archive = subprocess.run(["git", "archive", "main"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(main_dir)], input=archive, check=True)
    sources = {"this branch": REPO, "main": main_dir}
    for source in sources.values():  # byte-compile first, as a wheel install does
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(source / "llm_mistral_suite.py"),
                        str(source / "_llm_mistral_suite")], check=True)
    times: dict[str, dict[str, list[float]]] = {name: {} for name in sources}
    env = clean_env("", str(WORK))  # llm loads no plugin itself; the child imports one from the path given
    for _ in range(runs):
        for name, source in sources.items():
            out = subprocess.run([sys.executable, "-c", HOOKS_CHILD, str(source)], env=env, capture_output=True,
                                 text=True, check=True).stdout
            for step, seconds in json.loads(out).items():
                times[name].setdefault(step, []).append(seconds * 1000)
    shutil.rmtree(main_dir, ignore_errors=True)
    return {name: {step: statistics.median(v) for step, v in steps.items()} for name, steps in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency", type=float, default=3.0, help="seconds the fake takes to answer any request")
    parser.add_argument("--big-mb", type=int, default=30, help="size of the large PDF, MB")
    parser.add_argument("--hook-runs", type=int, default=21)
    args = parser.parse_args()
    from fake_mistral import FakeMistral
    from media_files import SAMPLE_PAGES, pdf_bytes, write_samples

    WORK.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="media-", dir=WORK))
    pdf = write_samples(folder)["pdf"]
    big = folder / "big.pdf"
    big.write_bytes(pdf_bytes(SAMPLE_PAGES) + b"\n%" + b"x" * (args.big_mb * 1_000_000) + b"\n")  # a comment: padding
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine_line()}; load average {load:.1f}")
    print(code_state())
    with FakeMistral(latency=args.latency) as fake:
        print(f"\n## A second question about the same PDF (fake answers every request after {args.latency:g} s; "
              f"median of {args.rounds})\n")
        print("| variant | 1st question | 2nd question | OCR requests for the two |\n|---|---|---|---|")
        for variant, first, second, count in second_question(fake, pdf, args.rounds):
            print(f"| {variant} | {first:.2f} s | {second:.2f} s | {count:g} |")
        print(f"\n## OCR of a {big.stat().st_size / 1e6:.0f} MB PDF (median wall of {args.rounds}; peak RSS of the "
              "`llm` process, min–max)\n")
        print("| variant | wall | peak RSS | how it travelled |\n|---|---|---|---|")
        for variant, wall, low, high, how in large_document(fake, big, args.rounds):
            print(f"| {variant} | {wall:.2f} s | {low:.0f}–{high:.0f} MB | {how} |")
    print(f"\n## Hooks in a fresh interpreter after `import llm, llm.cli` (median of {args.hook_runs}, ms)\n")
    print("| code | import | register_models | register_fragment_loaders |\n|---|---|---|---|")
    for name, steps in hooks_cost(args.hook_runs).items():
        print(f"| {name} | {steps['import']:.2f} | {steps['register_models']:.2f} | "
              f"{steps['register_fragment_loaders']:.3f} |")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
