"""Batch jobs at scale, each beside its baseline in the same run:

1. `llm mistral batch submit` of 10,000 and 100,000 generated prompts: wall, CPU and peak RSS of the `llm` process
   (flat memory: the upload streams from disk), beside an `llm` process that does nothing (`--help`: the floor) and
   a naive submitter that builds every line in memory and posts one body (same request bodies, same server).
2. `llm mistral batch results` of 100,000 chat answers into logs.db, beside the same command writing each response
   with llm's own `LogStore.log` (what `Response.log_to_db` does).
3. `llm mistral batch results` of 100,000 mistral-embed vectors into embeddings.db, beside `llm embed-multi`
   storing 100,000 vectors from an embedding model that answers instantly (its own insert rate).

The server is tests/fake_mistral.py's FakeMistral in a process of its own, driven through its stdin (so neither its
CPU nor its memory is the client's: a forked child starts with its parent's resident pages, which would count in
its peak RSS). Each measured `llm` run is a process of its own, measured with os.wait4. To keep the server's work
out of the measured submit, a job's answers are computed after the submit returned, with the fake's own endpoint
logic, and its output file written then.

    .venv/bin/python benchmarks/bench_batch.py [--prompts 100000] [--items 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(TESTS))

from _common import WORK, clean_env, code_state, machine_line, project_python, user_dir  # noqa: E402

KEY = "bench-key"

NAIVE_SUBMIT = r"""
# What a submitter without streaming does: every request line built (by the suite's own code) into one list,
# joined into one body, posted at once.
import json, sys, httpx, llm
from _llm_mistral_suite.batch_build import ChatRequests, PromptColumns, batch_chat_model
from _llm_mistral_suite.batch_input import read_rows
base_url, path = sys.argv[1], sys.argv[2]
model = batch_chat_model("mistral-small")
requests = ChatRequests(model, "Classify the ticket", {"temperature": "0"}, None, [], PromptColumns())
with open(path, "rb") as stream:
    lines = [json.dumps({"custom_id": l.custom_id, "body": l.body}) for l in requests.lines(read_rows(stream, "nl"))]
data = ("\n".join(lines) + "\n").encode()
answer = httpx.post(base_url + "/files", files={"file": ("batch.jsonl", data)}, data={"purpose": "batch"},
                    headers={"Authorization": "Bearer bench-key"}, timeout=600).json()
job = httpx.post(base_url + "/batch/jobs", json={"input_files": [answer["id"]], "endpoint": "/v1/chat/completions",
                 "model": "mistral-small-latest"}, headers={"Authorization": "Bearer bench-key"}, timeout=600).json()
print(job["id"])
"""

LOGSTORE_RESULTS = r"""
# `llm mistral batch results` with every response written by llm's own LogStore.log (Response.log_to_db's path)
import sys
import _llm_mistral_suite.logs_writer as logs_writer
original = logs_writer.LogsWriter.__init__
def slow(self, db):
    original(self, db)
    self.fast = False
logs_writer.LogsWriter.__init__ = slow
from llm.cli import cli
cli(prog_name="llm")
"""

STUB_EMBED_MULTI = r"""
# `llm embed-multi` with an embedding model that answers at once: what remains is llm's own insert path
import llm
from llm.plugins import pm
vector = [((i * 37) % 1000) / 1000.0 for i in range(1024)]
class Instant(llm.EmbeddingModel):
    model_id = "instant-1024"
    batch_size = 1000
    def embed_batch(self, items):
        for _ in items:
            yield vector
class Plugin:
    __name__ = "instant_embedding"
    @llm.hookimpl
    def register_embedding_models(self, register):
        register(Instant())
pm.register(Plugin(), name="instant-embedding")
from llm.cli import cli
cli(prog_name="llm")
"""


def measured(command: list[str], env: dict[str, str], stdin: str | None = None) -> dict:
    """Run ``command``; its wall time, CPU (user+sys), peak RSS and output."""
    out, err = (WORK / "bench-batch.out").open("w+"), (WORK / "bench-batch.err").open("w+")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                               stdout=out, stderr=err, text=True)
    if stdin:
        process.stdin.write(stdin)
        process.stdin.close()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0), err.seek(0)
    result = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
              "stdout": out.read(), "stderr": err.read()}
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{result['stdout']}\n{result['stderr'][-3000:]}")
    return result


def llm_command(*args: str) -> list[str]:
    return [project_python(), "-m", "llm", *args]


def write_prompts(path: Path, count: int) -> None:
    topics = ("an order that never arrived", "a password reset", "a refund", "a broken zip", "praise for support")
    with path.open("w") as out:
        for n in range(count):
            text = (f"Ticket {n}: the customer writes about {topics[n % 5]}; order {n * 7919 % 100003}, placed "
                    f"{n % 28 + 1} days ago. They would like an answer today and mention their plan ({n % 3}).")
            out.write(json.dumps({"id": f"ticket-{n}", "prompt": text}) + "\n")


def serve() -> None:
    """The fake server; commands on stdin, a JSON answer per command on stdout."""
    from fake_mistral import FakeMistral

    fake = FakeMistral(batch_polls=0).start()
    answer_later = fake._batch_result
    print(fake.base_url, flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "defer":  # jobs created from now on are answered by `finish`
            fake._batch_result = lambda job, index, custom_id, body: ({}, True)
            print("{}", flush=True)
        elif command == "finish":  # finish JOB: answer every request as the fake does, write the output file
            job = fake.batch_jobs[rest[0]]
            job.results = [answer_later(job, i, custom_id, body) for i, (custom_id, body) in enumerate(job.lines)]
            with fake._batch_lock:
                fake._finish(job, "SUCCESS")
            job.results = [({}, ok) for _, ok in job.results]  # the output file holds them now
            print(json.dumps({"output_mb": len(fake.files[job.output_file].data) / 1e6}), flush=True)
        elif command == "uploaded":  # uploaded JOB: the megabytes of its input files
            job = fake.batch_jobs[rest[0]]
            print(json.dumps({"mb": sum(len(fake.files[f].data) for f in job.input_files) / 1e6}), flush=True)
    fake.stop()


class Server:
    def __init__(self) -> None:
        self.process = subprocess.Popen([project_python(), __file__, "--serve"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().strip()

    def command(self, *words: str) -> dict:
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def job_id_of(result: dict) -> str:
    return result["stdout"].split()[0]


def rate(count: int, result: dict, floor: dict) -> str:
    """Items a second of wall time for the whole command, and of CPU time beyond the floor's (`llm` starting up:
    CPU time is what a loaded machine disturbs least)."""
    return f"{count / result['wall']:,.0f}/s | {count / max(result['cpu'] - floor['cpu'], 1e-9):,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()

    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "batch"
    data.mkdir(exist_ok=True)
    print(machine_line())
    print(code_state())
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    sizes = sorted({min(10_000, args.prompts), args.prompts})
    for size in sizes:
        if not (data / f"prompts-{size}.jsonl").exists():
            write_prompts(data / f"prompts-{size}.jsonl", size)
    items = data / f"items-{args.items}.jsonl"
    with items.open("w") as out:
        for n in range(args.items):  # 1,000 distinct texts: the fake's vectors are computed once each
            out.write(json.dumps({"id": f"doc-{n}", "content": f"Document {n % 1000} about batch embeddings."}) + "\n")

    server = Server()
    server.command("defer")
    rows = []
    try:
        floor = measured(llm_command("mistral", "batch", "--help"), clean_env("llm-mistral-suite", user_dir()))
        rows.append(("`llm mistral batch --help` (the floor)", "-", floor))
        submitted: dict[int, tuple[str, str]] = {}
        for size in sizes:
            home = user_dir()
            env = clean_env("llm-mistral-suite", home, LLM_MISTRAL_KEY=KEY, LLM_MISTRAL_BASE_URL=server.base_url)
            path = data / f"prompts-{size}.jsonl"
            result = measured(llm_command("mistral", "batch", "submit", str(path), "-m", "mistral-small",
                                          "-s", "Classify the ticket", "-o", "temperature", "0"), env)
            submitted[size] = (job_id_of(result), home)
            uploaded = server.command("uploaded", job_id_of(result))["mb"]
            rows.append((f"`llm mistral batch submit`, {size:,} prompts",
                         f"{path.stat().st_size / 1e6:.1f} MB in, {uploaded:.1f} MB uploaded", result))
        naive = measured([project_python(), "-c", NAIVE_SUBMIT, server.base_url, str(data / f"prompts-{args.prompts}.jsonl")],
                         clean_env("llm-mistral-suite", user_dir()))
        rows.append((f"naive: every line in memory, one POST, {args.prompts:,} prompts", "-", naive))
        print("\n## Submit\n")
        print("| run | input | wall | CPU | peak RSS |")
        print("|---|---|---|---|---|")
        for name, size, result in rows:
            print(f"| {name} | {size} | {result['wall']:.1f} s | {result['cpu']:.1f} s | {result['rss_mb']:.0f} MB |")

        # 2. chat results into logs.db
        job_id, home = submitted[args.prompts]
        output_mb = server.command("finish", job_id)["output_mb"]
        baseline_home = user_dir()
        shutil.copytree(home, baseline_home, dirs_exist_ok=True)
        env = clean_env("llm-mistral-suite", home, LLM_MISTRAL_KEY=KEY, LLM_MISTRAL_BASE_URL=server.base_url)
        ours = measured(llm_command("mistral", "batch", "results", job_id), env)
        again = measured(llm_command("mistral", "batch", "results", job_id), env)
        theirs = measured([project_python(), "-c", LOGSTORE_RESULTS, "mistral", "batch", "results", job_id],
                          {**env, "LLM_USER_PATH": baseline_home})
        count = args.prompts
        for result in (ours, theirs):
            assert f"Logged {count:,} responses" in result["stdout"], result["stdout"]
        assert "Logged 0 responses" in again["stdout"], again["stdout"]
        print(f"\n## {count:,} chat results into logs.db (output file {output_mb:.0f} MB)\n")
        print("| run | wall | CPU | peak RSS | rows a second (wall) | rows a CPU second beyond the floor |")
        print("|---|---|---|---|---|---|")
        for name, result in (("ours: `llm mistral batch results` (bulk writer)", ours),
                             (f"the same, run again (all {count:,} already logged)", again),
                             ("baseline: the same command writing with llm's `LogStore.log`", theirs)):
            print(f"| {name} | {result['wall']:.1f} s | {result['cpu']:.1f} s | {result['rss_mb']:.0f} MB | "
                  f"{rate(count, result, floor)} |")

        # 3. vectors into embeddings.db
        home = user_dir()
        env = clean_env("llm-mistral-suite", home, LLM_MISTRAL_KEY=KEY, LLM_MISTRAL_BASE_URL=server.base_url)
        submitted_embed = measured(llm_command("mistral", "batch", "embed", "docs", str(items), "-m", "mistral-embed"), env)
        job_id = job_id_of(submitted_embed)
        output_mb = server.command("finish", job_id)["output_mb"]
        stored = measured(llm_command("mistral", "batch", "results", job_id), env)
        assert f"Stored {args.items:,} vectors" in stored["stdout"], stored["stdout"]
        embed_multi = measured([project_python(), "-c", STUB_EMBED_MULTI, "embed-multi", "docs", str(items), "-m",
                                "instant-1024", "--batch-size", "1000", "--format", "nl"],
                               clean_env("llm-mistral-suite", user_dir()))
        print(f"\n## {args.items:,} vectors (1,024 dimensions) into embeddings.db (output file {output_mb:,.0f} MB)\n")
        print("| run | wall | CPU | peak RSS | vectors a second (wall) | vectors a CPU second beyond the floor |")
        print("|---|---|---|---|---|---|")
        for name, result in (("ours: `llm mistral batch embed` (the submit)", submitted_embed),
                             ("ours: `llm mistral batch results`", stored),
                             ("baseline: `llm embed-multi` with an instant model (insert only)", embed_multi)):
            print(f"| {name} | {result['wall']:.1f} s | {result['cpu']:.1f} s | {result['rss_mb']:.0f} MB | "
                  f"{rate(args.items, result, floor)} |")
    finally:
        server.close()
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
