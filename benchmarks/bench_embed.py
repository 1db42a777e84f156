"""`llm embed-multi` of 2,000 documents (~100 tokens each) against a loopback server answering in 100 ms:
ours (with `--batch-size 2000` and with llm's default batch size, each with base64 answers and with JSON floats)
vs llm-mistral 0.16, in the same run.

The server is tests/fake_mistral.py's FakeMistral in its own process (its CPU is not the client's): it enforces
the service's limits (512 inputs, 16,384 tokens per request, with a pessimistic tokenizer) and counts requests.

llm-mistral 0.16 builds ``Mistral(api_key=key)`` per batch: no server URL or environment variable reaches
the SDK, so the wrapper below points the SDK's "global" server entry at the loopback server
(``mistralai.client.sdkconfiguration.SERVERS``, a dict entry; no code of llm-mistral is changed), then
runs llm's own CLI.

Ours asks for ``encoding_format: base64``. Its "JSON floats" variants measure the same code against the server
told to ignore that field and answer floats (as a service without base64 would), which is what ours sent and
read before base64.

    .venv/bin/python benchmarks/bench_embed.py [--rounds 3] [--append-results]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"

BASELINE_WRAPPER = r"""
import sys
from mistralai.client import sdkconfiguration
sdkconfiguration.SERVERS[sdkconfiguration.SERVER_GLOBAL] = sys.argv.pop(1)
from llm.cli import cli
cli(prog_name="llm")
"""


# --- the server (own process; commands on stdin, answers on stdout) ---------------------------------


def serve(latency: float) -> None:
    sys.path.insert(0, str(TESTS))
    from fake_mistral import FakeMistral

    fake = FakeMistral(latency=latency).start()
    answer = {"encoding": "as asked"}
    embeddings = fake._embeddings

    def embeddings_as_configured(request: dict):  # "floats": encoding_format ignored, as a service without it
        if answer["encoding"] == "floats" and isinstance(request, dict):
            request = {k: v for k, v in request.items() if k != "encoding_format"}
        return embeddings(request)

    fake._embeddings = embeddings_as_configured
    print(fake.port, flush=True)
    cpu = time.process_time()
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "reset":  # reset MIN_INTERVAL as-asked|floats
            with fake._lock:
                fake.requests.clear()
                fake.embedding_requests = fake.max_concurrency_seen = fake.rate_limited = 0
                fake.min_interval = float(rest[0])
                fake._last_allowed = float("-inf")
                answer["encoding"] = rest[1]
            cpu = time.process_time()
            print("{}", flush=True)
        elif command == "stats":
            with fake._lock:
                sent = [r.body for r in fake.requests if r.path.rstrip("/").endswith("/embeddings")]
                stats = {"embedding_requests": fake.embedding_requests, "rate_limited": fake.rate_limited,
                         "max_concurrency": fake.max_concurrency_seen, "all_requests": len(fake.requests),
                         "server_cpu": time.process_time() - cpu}
            stats["max_inputs"] = max((len(b["input"]) for b in sent if b), default=0)
            stats["asked"] = sorted({b.get("encoding_format", "float") for b in sent if b})
            stats["max_tokens"] = max((sum(fake.count_tokens(t) for t in b["input"]) for b in sent if b), default=0)
            print(json.dumps(stats), flush=True)
    fake.stop()


class Server:
    def __init__(self, latency: float) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", "--latency", str(latency)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())

    def command(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


# --- one measured run --------------------------------------------------------------------------------


def stored_rows(db: Path) -> dict[str, bytes]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select id, embedding from embeddings"))


def run(server: Server, variant: dict, csv_path: Path, docs: list[str], min_interval: float = 0.0) -> dict:
    sys.path.insert(0, str(HERE))
    from _common import clean_env, user_dir

    from fake_mistral import _vector

    home = user_dir()
    env = clean_env(variant["plugins"], home, LLM_MISTRAL_KEY="bench-key", **variant.get("env", {}))
    server.command(f"reset {min_interval} {variant.get('answer', 'as-asked')}")
    command = [*variant["command"], "embed-multi", "docs", str(csv_path), "-m", "mistral-embed", *variant["args"]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode:
        sys.exit(f"{variant['name']} failed:\n{result.stdout}\n{result.stderr}")
    stats = server.command("stats")
    rows = stored_rows(Path(home) / "embeddings.db")
    assert len(rows) == len(docs), (variant["name"], len(rows))
    for i in (0, len(docs) // 2, len(docs) - 1):  # the right vector under the right id
        vector = struct.unpack(f"<{len(rows[str(i)]) // 4}f", rows[str(i)])
        assert all(abs(a - b) < 1e-6 for a, b in zip(vector, _vector(docs[i], 1024))) and len(vector) == 1024
    return {"wall": wall, "client_cpu": client_cpu, **stats}


def startup(command: list[str], plugins: str, env_extra: dict) -> float:
    """Wall time of `llm embed-models` (interpreter + llm + plugin start-up), the floor under every run."""
    sys.path.insert(0, str(HERE))
    from _common import clean_env, user_dir

    env = clean_env(plugins, user_dir(), **env_extra)
    start = time.perf_counter()
    subprocess.run([*command, "embed-models"], env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(TESTS))
    from _common import WORK, baseline_python, code_state, machine_line, median, package_version, suite_python

    from fake_mistral import _vector, _vector_base64, count_tokens, documents

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-rate-limited", action="store_true", help="skip the run against a 1 request/s server")
    parser.add_argument("--append-results", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = parser.parse_args()

    docs = documents(args.docs, args.tokens)
    WORK.mkdir(parents=True, exist_ok=True)
    csv_path = WORK / f"embed-docs-{args.docs}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "content"])
        writer.writerows((str(i), doc) for i, doc in enumerate(docs))

    ours = [str(Path(suite_python()).parent / "llm")]  # llm and this plugin only, as a user installs them
    suite = {"command": ours, "plugins": "llm-mistral-suite"}
    variants = [
        {"name": "llm-mistral-suite, `--batch-size 2000`, base64", **suite, "args": ["--batch-size", "2000"],
         "concurrency": 4},
        {"name": "llm-mistral-suite, `--batch-size 2000`, JSON floats", **suite, "args": ["--batch-size", "2000"],
         "concurrency": 4, "answer": "floats"},
        # llm hands over 100 documents at a time and waits for each batch: one request in flight at a time.
        {"name": "llm-mistral-suite, default batch size (llm's 100), base64", **suite, "args": [], "concurrency": 1},
        {"name": "llm-mistral-suite, default batch size (llm's 100), JSON floats", **suite, "args": [],
         "concurrency": 1, "answer": "floats"},
    ]
    if not args.no_baseline:
        baseline = [baseline_python(), "-c", BASELINE_WRAPPER]
        variants.append({"name": "llm-mistral 0.16 (its batch size: 10)", "command": baseline,
                         "plugins": "llm-mistral", "args": [], "concurrency": 1, "baseline": True})

    server = Server(args.latency)
    base_url = f"http://127.0.0.1:{server.port}"
    for variant in variants:
        url = base_url if variant.get("baseline") else base_url + "/v1"
        if variant.get("baseline"):
            variant["command"] = [*variant["command"], url]
        else:
            variant["env"] = {"LLM_MISTRAL_BASE_URL": url}
    results: dict[str, list[dict]] = {v["name"]: [] for v in variants}
    started, load_start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    try:
        print(machine_line(), file=sys.stderr)
        for variant in variants:  # warm-up (.pyc, page cache, baseline's model list), not counted
            run(server, variant, csv_path, docs)
        for round_number in range(args.rounds):
            for variant in variants:
                figures = run(server, variant, csv_path, docs)
                results[variant["name"]].append(figures)
                print(f"  round {round_number + 1} {variant['name']}: {figures['wall']:.2f} s, "
                      f"{figures['embedding_requests']} requests", file=sys.stderr)
        starts = {v["name"]: median([startup(v["command"], v["plugins"], v.get("env", {})) for _ in range(3)])
                  for v in variants}
        limited = None
        if not args.no_rate_limited:
            limited = run(server, variants[0], csv_path, docs, min_interval=1.0)
            print(f"  rate-limited: {limited}", file=sys.stderr)
    finally:
        server.close()
    ended, load_end = time.strftime("%H:%M UTC", time.gmtime()), os.getloadavg()

    tokens = sum(count_tokens(d) for d in docs)
    answer_size = {  # one answer to 100 documents, as the server sends it
        name: len(json.dumps({"data": [{"object": "embedding", "embedding": vector(d, 1024), "index": i}
                                       for i, d in enumerate(docs[:100])]}))
        for name, vector in (("base64", _vector_base64), ("floats", _vector))
    }
    lines = [
        "",
        f"## Embeddings: `llm embed-multi` of {args.docs:,} documents, {args.latency * 1000:.0f} ms per request",
        "",
        f"Taken {started}–{ended} with `benchmarks/bench_embed.py --rounds {args.rounds}`; load average "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end. The code was {code_state()}.",
        "",
        f"{args.docs:,} documents of about {args.tokens} tokens ({tokens:,} tokens by the fake's pessimistic "
        f"tokenizer; the 16,384-token limit alone needs {-(-tokens // 16384)} requests) from a CSV file through "
        "`llm embed-multi docs docs.csv -m mistral-embed`, each run a fresh `llm` process with an empty user dir, "
        "against tests/fake_mistral.py in its own process, answering every request after "
        f"{args.latency * 1000:.0f} ms and refusing any request over 512 inputs or 16,384 tokens. Ours runs in "
        "`benchmarks/.work/suite-venv` (llm 0.36 and this checkout only, as a user installs it), llm-mistral 0.16 in "
        "`benchmarks/.work/baseline-venv` (llm 0.36 and llm-mistral 0.16 from PyPI). \"base64\": ours as it is, "
        "asking for `encoding_format: base64`; \"JSON floats\": the same code with the server ignoring that field "
        f"and answering floats, as ours read them before. An answer to 100 documents is {answer_size['base64']:,} "
        f"bytes as base64 and {answer_size['floats']:,} as JSON floats. The variants alternate within each round; "
        f"median of {args.rounds} rounds after a warm-up round; every run checked: all {args.docs:,} rows stored, "
        "vectors right for their ids. Ideal = requests x latency / concurrency (no CPU, no start-up): llm's default "
        "batches of 100 documents are one request each, sent one after the other. Start-up = `llm embed-models` "
        "wall time in the same venv with the same plugins, the floor of any `llm` command. Client CPU = the whole "
        "`llm` process (start-up included); server CPU = the fake's process, which shares the machine's 2 cores "
        "with the client. \"vs llm-mistral 0.16\" = its median wall / the variant's median wall (in brackets: the "
        "median of the per-round ratios).",
        "",
        f"{machine_line()}; llm {package_version(suite_python(), 'llm')}, llm-mistral-suite "
        f"{package_version(suite_python(), 'llm-mistral-suite')}"
        + ("" if args.no_baseline else f", llm-mistral {package_version(baseline_python(), 'llm-mistral')}, "
           f"mistralai {package_version(baseline_python(), 'mistralai')}"),
        "",
        "| variant | wall (median, min–max) | requests | concurrency (max seen) | ideal | start-up | client CPU "
        "| server CPU | largest request (inputs / tokens) | vs llm-mistral 0.16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_runs = results[variants[-1]["name"]] if not args.no_baseline else None
    for variant in variants:
        runs = results[variant["name"]]
        wall = median([r["wall"] for r in runs])
        requests = runs[0]["embedding_requests"]
        ideal = requests * args.latency / variant["concurrency"]
        speedup = "–"
        if base_runs and not variant.get("baseline"):
            per_round = median([b["wall"] / r["wall"] for b, r in zip(base_runs, runs)])
            speedup = f"**{median([b['wall'] for b in base_runs]) / wall:.1f}x faster** ({per_round:.1f}x)"
        elif base_runs:
            speedup = "1x"
        spread = f"{min(r['wall'] for r in runs):.2f}–{max(r['wall'] for r in runs):.2f}"
        lines.append(
            f"| {variant['name']} | {wall:.2f} s ({spread}) | {requests} | {variant['concurrency']} ({max(r['max_concurrency'] for r in runs)}) | {ideal:.2f} s "
            f"| {starts[variant['name']]:.2f} s | {median([r['client_cpu'] for r in runs]):.2f} s "
            f"| {median([r['server_cpu'] for r in runs]):.2f} s | {max(r['max_inputs'] for r in runs)} / "
            f"{max(r['max_tokens'] for r in runs):,} | {speedup} |"
        )
    if limited:
        lines += [
            "",
            f"Rate-limited account: the first variant's run against the server answering 429 (with "
            f"`Retry-After`) to any request less than 1 s after the last one it let through: {limited['wall']:.1f} s, "
            f"{limited['embedding_requests'] - limited['rate_limited']} requests embedded + "
            f"{limited['rate_limited']} answered 429, all {args.docs:,} rows stored (floor: "
            f"{limited['embedding_requests'] - limited['rate_limited'] - 1} s between the first and last request).",
        ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.append_results:
        with (HERE / "RESULTS.md").open("a") as f:
            f.write(section)


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve(float(sys.argv[sys.argv.index("--latency") + 1]))
    else:
        main()
