"""CPU cost of a 20,000-chunk streamed reply through llm's Python API: ours vs a bare httpx-sse model vs llm-mistral 0.16."""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Only the standard library at top level: this file also runs as the server and as the client child,
# the latter in the baseline venv too.
HERE = Path(__file__).resolve().parent
MODEL = "mistral-large-latest"
PIECES = ["The", " model", " streams", " text", ",", " one", " token", " at", " a", " time", ".", " é", "té",
          " Mistral", " 42", "\n", " «", "ok", "»", " the", " of", " and", " to", " in", " is", "-", " (", ")"]


# --- the reply -----------------------------------------------------------------------------------


def reply_pieces(chunks: int, seed: int = 2) -> list[str]:
    """The text pieces of the reply, a few characters each, deterministic."""
    rng = random.Random(seed)
    return [rng.choice(PIECES) for _ in range(chunks)]


def render_reply(pieces: list[str]) -> bytes:
    """The whole HTTP/1.1 chunked body, one HTTP chunk per SSE event, shaped like Mistral's real stream.

    Compact JSON as the service sends it: a role chunk, then one chunk per piece with the ``p`` padding
    key real chunks carry; the last piece carries ``finish_reason`` and ``usage``; then ``data: [DONE]``.
    """
    head = {"id": "9bc79f2031ee479486a36543066c2a1c", "object": "chat.completion.chunk", "created": 1791298523,
            "model": MODEL}

    def event(delta: dict, finish: str | None = None, **extra: object) -> str:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": piece}, p="abcdefghijklmnop"[: 1 + i % 16]) for i, piece in enumerate(pieces[:-1])]
    usage = {"prompt_tokens": 12, "total_tokens": 12 + len(pieces), "completion_tokens": len(pieces),
             "prompt_tokens_details": {"cached_tokens": 0}}
    events.append(event({"content": pieces[-1]}, "stop", usage=usage, p="abcde"))
    events.append("[DONE]")
    body = bytearray()
    for data in events:
        payload = f"data: {data}\n\n".encode()
        body += b"%x\r\n%s\r\n" % (len(payload), payload)
    body += b"0\r\n\r\n"
    return bytes(body)


# --- the server (its own process: its CPU is not counted) ----------------------------------------


def serve(chunks: int) -> None:
    """Serve the pre-rendered reply to every POST .../chat/completions; GET /stats tells what was sent."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = render_reply(reply_pieces(chunks))
    stats = {"replies": 0, "bytes": 0, "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
             "requests": []}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self.path.endswith("/v1/chat/completions") or request.get("stream") is not True:
                self.send_error(400, f"unexpected request {self.path} {request}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(body)  # unbuffered socket writer: one sendall of the pre-rendered bytes
            stats["replies"] += 1
            stats["bytes"] += len(body)
            stats["requests"].append({"path": self.path, "model": request.get("model"),
                                      "user_agent": self.headers.get("User-Agent")})

        def do_GET(self) -> None:
            data = json.dumps(stats).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def server_stats(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/stats")
    return json.loads(connection.getresponse().read())


# --- the client child: one variant, one reply --------------------------------------------------------


def bare_model_class():
    """The baseline: a minimal llm.KeyModel around a bare httpx-sse loop yielding choices[0].delta.content."""
    import httpx
    import httpx_sse
    import llm

    class BareSSE(llm.KeyModel):
        model_id = "bench-bare-httpx-sse"
        needs_key = "bench"
        can_stream = True

        def execute(self, prompt, stream, response, conversation, key=None):
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt.prompt}], "stream": True}
            with httpx.Client(timeout=300) as client:
                with httpx_sse.connect_sse(client, "POST", os.environ["BENCH_BASE_URL"] + "/v1/chat/completions",
                                           json=body, headers={"Authorization": f"Bearer {key}"}) as source:
                    for sse in source.iter_sse():
                        if sse.data == "[DONE]":
                            break
                        content = json.loads(sse.data)["choices"][0]["delta"].get("content")
                        if content:
                            yield content

    return BareSSE


def client(variant: str) -> None:
    """Load one variant, then stream one reply through llm's Python API; print CPU and a digest of the text."""
    import llm

    base_url = os.environ["BENCH_BASE_URL"]
    if variant == "ours":
        import httpx  # noqa: F401  imported before the timed window, as in the bare variant
        import httpx_sse  # noqa: F401

        os.environ["LLM_MISTRAL_BASE_URL"] = base_url + "/v1"
        model = llm.get_model(f"mistral/{MODEL}")
        assert type(model).__module__ == "_llm_mistral_suite.chat", type(model)
    elif variant == "ours-server":  # the same stream as an OpenAI-compatible server (issue 5's path)
        import httpx  # noqa: F401
        import httpx_sse  # noqa: F401
        from _llm_mistral_suite.servers import servers_path
        from _llm_mistral_suite.storage import write_json_atomic

        write_json_atomic(servers_path(), {"bench-server": {"url": base_url + "/v1", "model": MODEL}})
        model = llm.get_model("bench-server")
        assert type(model).__name__ == "ServerChat", type(model)
    elif variant == "bare":
        bare = bare_model_class()

        class BarePlugin:  # registered like a plugin, so every variant goes through llm.get_model()
            @llm.hookimpl
            def register_models(self, register):
                register(bare())

        llm.plugins.pm.register(BarePlugin(), name="bench-bare")
        model = llm.get_model(bare.model_id)
    elif variant == "llm-mistral":
        # llm-mistral 0.16 builds `Mistral(api_key=key)`: no server_url and no environment variable reaches
        # it, so the SDK's "global" server entry is pointed at the loopback server (a dict entry, no code).
        from mistralai.client import sdkconfiguration

        sdkconfiguration.SERVERS[sdkconfiguration.SERVER_GLOBAL] = base_url
        model = llm.get_model(f"mistral/{MODEL}")
        assert type(model).__module__ == "llm_mistral", type(model)
    else:
        raise SystemExit(f"unknown variant {variant}")

    profile_path = os.environ.get("BENCH_PROFILE")  # --profile: cProfile the timed window (figures then inflated)
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    response = model.prompt("Write a long story.", stream=True, key="bench-key")
    pieces = list(response)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    if profile_path:
        profiler.disable()
        profiler.dump_stats(profile_path)
    text = "".join(pieces)
    print(json.dumps({
        "variant": variant,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "wall": wall,
        "pieces": len(pieces),
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }))


# --- profiling -----------------------------------------------------------------------------------

LAYERS = [  # (layer, substring of the code's file name), first match wins
    ("llm-mistral-suite (stream_chunks, decode_event, ReplyDecoder, execute)", "_llm_mistral_suite"),
    ("benchmark's bare model (execute loop)", "bench_stream"),
    ("httpx_sse (SSE line decoding)", "httpx_sse"),
    ("HTTP: httpx, httpcore, h11, socket", ("httpx", "httpcore", "h11", "socket", "ssl", "selectors")),
    ("json.loads", ("json/", "_json")),
    ("mistralai SDK", "mistralai"),
    ("pydantic", "pydantic"),
    ("llm-mistral 0.16", "llm_mistral.py"),
    ("llm (Response iteration, events)", "/llm/"),
]


def print_profile(variant: str, path: str) -> None:
    """Own time (tottime) of the profiled window, grouped by layer."""
    import pstats

    stats = pstats.Stats(path).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    totals: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in stats.items():
        where = filename if filename != "~" else name  # built-ins: "<method 'decode' of 'bytes' objects>"
        layer = next((label for label, keys in LAYERS
                      if any(k in where for k in ((keys,) if isinstance(keys, str) else keys))), "other (builtins, stdlib)")
        totals[layer] = totals.get(layer, 0.0) + tottime
    whole = sum(totals.values())
    print(f"\n### cProfile of one reply, {variant}: {whole:.3f} s profiled (profiling inflates it)")
    print("| layer | own time | share |\n|---|---|---|")
    for layer, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        if seconds < 0.0005:
            continue
        print(f"| {layer} | {seconds:.3f} s | {seconds / whole:.0%} |")


# --- the orchestrator ------------------------------------------------------------------------------


def run_client(python: str, variant: str, env: dict[str, str]) -> dict:
    """One child; adds the child's whole-process CPU from RUSAGE_CHILDREN (interpreter start and imports too)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([python, __file__, "--client", variant], env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"client {variant} failed:\n{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["cpu"] = figures["user"] + figures["sys"]
    figures["process_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return figures


def main() -> None:
    sys.path.insert(0, str(HERE))
    from _common import (baseline_python, clean_env, code_state, machine_line, median, package_version,
                         project_python, user_dir)

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7, help="runs of each variant, alternating (>= 5)")
    parser.add_argument("--no-baseline", action="store_true", help="skip llm-mistral 0.16")
    parser.add_argument("--server", action="store_true",
                        help="also stream through `llm mistral servers` (the OpenAI-compatible server model)")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing: cProfile one reply per variant and print where its time goes")
    args = parser.parse_args()

    variants = {"ours": project_python(), "bare": project_python()}
    if args.server:
        variants["ours-server"] = project_python()
    if not args.no_baseline:
        variants["llm-mistral"] = baseline_python()
    pieces = reply_pieces(args.chunks)
    expected_text = "".join(pieces)
    expected_sha = hashlib.sha256(expected_text.encode()).hexdigest()
    body = render_reply(pieces)

    home = user_dir()
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--chunks", str(args.chunks)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        base_url = f"http://127.0.0.1:{port}"
        stats = server_stats(port)
        assert stats["body_sha256"] == hashlib.sha256(body).hexdigest()
        envs = {
            "ours": clean_env("llm-mistral-suite", home, BENCH_BASE_URL=base_url),
            "ours-server": clean_env("llm-mistral-suite", home, BENCH_BASE_URL=base_url),
            "bare": clean_env("", home, BENCH_BASE_URL=base_url),
            "llm-mistral": clean_env("llm-mistral", home, BENCH_BASE_URL=base_url),
        }
        print(machine_line())
        print(code_state())
        print(f"reply: {args.chunks} text chunks + role chunk + [DONE], {len(body):,} bytes on the wire, "
              f"{len(expected_text):,} characters of text")
        for variant, python in variants.items():  # warm-up, not counted (.pyc, page cache, checks)
            run_client(python, variant, envs[variant])
        if args.profile:
            for variant, python in variants.items():
                path = str(Path(home) / f"{variant}.prof")
                run_client(python, variant, {**envs[variant], "BENCH_PROFILE": path})
                print_profile(variant, path)
            return
        results: dict[str, list[dict]] = {variant: [] for variant in variants}
        order = list(variants)
        for round_number in range(args.rounds):
            for variant in order[round_number % len(order):] + order[: round_number % len(order)]:
                sent_before = server_stats(port)["replies"]
                figures = run_client(variants[variant], variant, envs[variant])
                sent = server_stats(port)
                # The same bytes, all of them, read by every variant; the same text out of each.
                assert sent["replies"] == sent_before + 1, "exactly one reply per run"
                assert figures["sha256"] == expected_sha and figures["chars"] == len(expected_text), figures
                results[variant].append(figures)
                print(f"  round {round_number + 1} {variant:12} CPU {figures['cpu']:.3f} s "
                      f"(process {figures['process_cpu']:.3f} s), {figures['pieces']} pieces", file=sys.stderr)
        final = server_stats(port)
        assert final["bytes"] == final["replies"] * len(body)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(home, ignore_errors=True)

    versions = {"ours": package_version(project_python(), "llm-mistral-suite"),
                "llm-mistral": package_version(variants.get("llm-mistral", project_python()), "llm-mistral"),
                "httpx": package_version(project_python(), "httpx"),
                "httpx-sse": package_version(project_python(), "httpx-sse"),
                "llm": package_version(project_python(), "llm")}
    print(f"versions: {versions}")
    print(f"\n## Streaming {args.chunks:,} chunks through `model.prompt(..., stream=True)`, median of {args.rounds} runs each")
    print("| variant | reply CPU (user+sys) | ratio to bare | whole child process CPU | reply wall | text pieces |")
    print("|---|---|---|---|---|---|")
    names = {"ours": "llm-mistral-suite MistralChat", "bare": "bare httpx-sse llm.KeyModel (baseline)",
             "llm-mistral": "llm-mistral 0.16 (mistralai SDK)",
             "ours-server": "llm-mistral-suite ServerChat (`llm mistral servers`, llamafile's path)"}
    bare_cpu = median([r["cpu"] for r in results["bare"]])
    summary = {}
    for variant, runs in results.items():
        cpu = median([r["cpu"] for r in runs])
        summary[variant] = {
            "cpu": cpu, "cpus": [r["cpu"] for r in runs], "process_cpu": median([r["process_cpu"] for r in runs]),
            "wall": median([r["wall"] for r in runs]), "pieces": runs[0]["pieces"],
            "min": min(r["cpu"] for r in runs), "max": max(r["cpu"] for r in runs),
        }
        s = summary[variant]
        print(f"| {names[variant]} | {cpu:.3f} s ({s['min']:.3f}–{s['max']:.3f}) | **{cpu / bare_cpu:.2f}x** "
              f"| {s['process_cpu']:.3f} s | {s['wall']:.3f} s | {s['pieces']:,} |")
    per_round = [o["cpu"] / b["cpu"] for o, b in zip(results["ours"], results["bare"])]
    print(f"\nours/bare: ratio of medians {summary['ours']['cpu'] / bare_cpu:.2f}x, median of per-round ratios "
          f"{median(per_round):.2f}x (target <= 1.3x: {'PASS' if summary['ours']['cpu'] / bare_cpu <= 1.3 else 'FAIL'})")
    if "llm-mistral" in results:
        per_round = [o["cpu"] / b["cpu"] for o, b in zip(results["llm-mistral"], results["bare"])]
        print(f"llm-mistral/bare: ratio of medians {summary['llm-mistral']['cpu'] / bare_cpu:.2f}x, median of "
              f"per-round ratios {median(per_round):.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": results, "versions": versions}, indent=2))


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve(int(sys.argv[sys.argv.index("--chunks") + 1]))
    elif "--client" in sys.argv:
        client(sys.argv[sys.argv.index("--client") + 1])
    else:
        main()
