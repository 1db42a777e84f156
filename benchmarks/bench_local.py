"""Local models (issues 4, 14): 8-turn chats and generation speed on random-weight Mixtral-style and Mamba-2 GGUFs.

The model (~83 MB: 512 wide, 8 layers, 8 experts with 2 used per token, F16) is written by
tests/gguf_factory.py into benchmarks/.work/ on first use. Three ways to hold the same 8-turn chat
(about 150 words per user turn, replies of up to 64 tokens, temperature 0, one thread):

- plugin: llm's Python API as `llm chat` does it: ``conversation.prompt()`` per turn on
  ``mistral-local/bench``, the reply streamed, and each response logged to logs.db.
- direct: llama-cpp-python with one ``Llama`` kept loaded, ``create_chat_completion(stream=True)``
  on the growing message list.
- load per turn: a fresh ``Llama`` for every turn (what llm-llama-cpp 0.3 does), then the same call.

Each measurement runs in its own child process (``--child``) and times from before the model is loaded
to the last reply token, so every way pays its load once (or per turn). Rounds interleave the ways.

Generation speed: after a warm-up, 256 tokens from a short prompt, through the plugin (llm's
``model.prompt``, streamed) and through llama-cpp-python's ``create_chat_completion(stream=True)``;
tokens/s over the decode phase (first token to last) and end to end.

Codestral Mamba's architecture (``--part mamba``): the same 8-turn chat on a random-weight Mamba-2 GGUF (~37 MB:
512 wide, 8 layers, d_inner 1024, d_state 64, F16), through the plugin and through llama-cpp-python with one
``Llama`` kept loaded. A Mamba state cannot be cut back: llama-cpp-python re-reads the whole conversation each
turn unless the new prompt extends exactly what it evaluated, which the plugin's prompts do.

    .venv/bin/python benchmarks/bench_local.py [--part all|mixtral|mamba] [--rounds 5] [--threads 1] [--append-results]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import WORK, machine_line  # noqa: E402

MODEL = WORK / "mixtral-bench-512x8-moe8.gguf"
MAMBA_MODEL = WORK / "mamba2-bench-512x8.gguf"
TURNS, WORDS_PER_TURN, REPLY_TOKENS, GEN_TOKENS = 8, 150, 64, 256


def ensure_model() -> Path:
    if not MODEL.exists():
        from gguf_factory import write_tiny_gguf

        WORK.mkdir(parents=True, exist_ok=True)
        write_tiny_gguf(MODEL.with_suffix(".tmp"), moe=True, n_embd=512, n_layer=8, n_ff=320, n_head=8,
                        n_head_kv=4, n_expert=8, n_expert_used=2, context_length=4096, seed=0, dtype="f16")
        MODEL.with_suffix(".tmp").replace(MODEL)
    return MODEL


def ensure_mamba_model() -> Path:
    if not MAMBA_MODEL.exists():
        from gguf_factory import write_tiny_mamba2_gguf

        WORK.mkdir(parents=True, exist_ok=True)
        write_tiny_mamba2_gguf(MAMBA_MODEL.with_suffix(".tmp"), n_embd=512, n_layer=8, d_inner=1024, d_state=64,
                               n_group=1, head_dim=64, context_length=4096, seed=0, dtype="f16")
        MAMBA_MODEL.with_suffix(".tmp").replace(MAMBA_MODEL)
    return MAMBA_MODEL


def user_turns() -> list[str]:
    from gguf_factory import DEFAULT_WORDS

    rng = random.Random(42)
    return [" ".join(rng.choice(DEFAULT_WORDS) for _ in range(WORDS_PER_TURN)) for _ in range(TURNS)]


# --- children: each prints one JSON line -------------------------------------------------------------


def _llama(threads: int):
    import ctypes

    import llama_cpp

    # The same silence the plugin installs, so neither side pays for printing llama.cpp's log.
    global _keep_callback
    _keep_callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(_keep_callback, ctypes.c_void_p(0))
    return llama_cpp


def child_plugin_chat(threads: int, name: str = "bench") -> dict:
    import llm
    import sqlite_utils
    from llm.migrations import migrate

    db = sqlite_utils.Database(Path(os.environ["LLM_USER_PATH"]) / "logs.db")
    migrate(db)
    model = llm.get_model(f"mistral-local/{name}")
    conversation = model.conversation()
    start, cpu = time.perf_counter(), time.process_time()
    details = []
    logging = 0.0
    for text in user_turns():
        response = conversation.prompt(text, max_tokens=REPLY_TOKENS, temperature=0, n_threads=threads)
        for _ in response:
            pass
        logged = time.perf_counter()
        response.log_to_db(db)
        logging += time.perf_counter() - logged
        usage = response.usage()
        details.append({"input": usage.input, "output": usage.output,
                        "cached": (usage.details or {}).get("cached_tokens", 0)})
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "turns": details,
            "logging": logging}


def child_direct_chat(threads: int, reload_each_turn: bool, path: Path = MODEL) -> dict:
    start, cpu = time.perf_counter(), time.process_time()  # like the plugin, which imports llama_cpp on its first turn
    llama_cpp = _llama(threads)
    llama = None
    messages: list[dict] = []
    for text in user_turns():
        if llama is None or reload_each_turn:
            if llama is not None:
                llama.close()
            llama = llama_cpp.Llama(str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                                    n_gpu_layers=0, verbose=False)
        messages.append({"role": "user", "content": text})
        reply = "".join(
            chunk["choices"][0]["delta"].get("content") or ""
            for chunk in llama.create_chat_completion(messages, max_tokens=REPLY_TOKENS, temperature=0, stream=True)
        )
        messages.append({"role": "assistant", "content": reply})
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def child_gen(threads: int, reps: int) -> dict:
    """Plugin and llama-cpp-python in one process, runs alternating, so both see the same machine."""
    import llm

    llama_cpp = _llama(threads)
    model = llm.get_model("mistral-local/bench")
    model.prompt("hello", max_tokens=8, temperature=0, n_threads=threads).text()  # load and warm up
    llama = llama_cpp.Llama(str(MODEL), n_ctx=4096, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0,
                            verbose=False)
    list(llama.create_chat_completion([{"role": "user", "content": "hello"}], max_tokens=8, temperature=0, stream=True))

    def plugin() -> list[float]:
        response = model.prompt("hello there", max_tokens=GEN_TOKENS, temperature=0, n_threads=threads)
        return [time.perf_counter() for chunk in response if chunk]

    def direct() -> list[float]:
        return [time.perf_counter()
                for chunk in llama.create_chat_completion([{"role": "user", "content": "hello there"}],
                                                          max_tokens=GEN_TOKENS, temperature=0, stream=True)
                if chunk["choices"][0]["delta"].get("content")]

    results: dict[str, dict[str, list[float]]] = {}
    for index in range(2 * reps):
        name, run = [("plugin", plugin), ("direct", direct)][(index + index // 2) % 2]
        started, cpu = time.perf_counter(), time.process_time()
        stamps = run()  # the factory's model emits one whole word per token: one chunk per token
        cpu = time.process_time() - cpu
        assert len(stamps) == GEN_TOKENS, len(stamps)
        slot = results.setdefault(name, {"decode_tps": [], "end_to_end_tps": [], "cpu_tps": []})
        slot["decode_tps"].append((GEN_TOKENS - 1) / (stamps[-1] - stamps[0]))
        slot["end_to_end_tps"].append(GEN_TOKENS / (stamps[-1] - started))
        slot["cpu_tps"].append(GEN_TOKENS / cpu)
    return {name: {key: statistics.median(values) for key, values in slot.items()} for name, slot in results.items()}


# --- parent ----------------------------------------------------------------------------------------


def run_child(kind: str, threads: int, user: str, reps: int = 3) -> dict:
    env = {**os.environ, "LLM_USER_PATH": user, "LLM_LOAD_PLUGINS": "llm-mistral-suite"}
    command = [sys.executable, __file__, "--child", kind, "--threads", str(threads), "--reps", str(reps)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"child {kind} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5, help="generation runs of each way per child")
    parser.add_argument("--part", choices=("all", "mixtral", "mamba"), default="all")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--append-results", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = parser.parse_args()

    if args.child:
        children = {
            "plugin-chat": lambda: child_plugin_chat(args.threads),
            "direct-chat": lambda: child_direct_chat(args.threads, reload_each_turn=False),
            "reload-chat": lambda: child_direct_chat(args.threads, reload_each_turn=True),
            "gen": lambda: child_gen(args.threads, args.reps),
            "mamba-plugin-chat": lambda: child_plugin_chat(args.threads, "mamba-bench"),
            "mamba-direct-chat": lambda: child_direct_chat(args.threads, reload_each_turn=False, path=MAMBA_MODEL),
        }
        print(json.dumps(children[args.child]()))
        return

    load_before = _load()
    model = ensure_model() if args.part in ("all", "mixtral") else MODEL
    mamba = ensure_mamba_model() if args.part in ("all", "mamba") else MAMBA_MODEL
    user = tempfile.mkdtemp(prefix="llm-user-local-", dir=WORK)
    (Path(user) / "mistral-suite-local.json").write_text(
        json.dumps({"models": {"bench": {"path": str(model), "aliases": []},
                               "mamba-bench": {"path": str(mamba), "aliases": []}}})
    )
    if args.part == "mamba":
        text = mamba_section(args, user, load_before)
        print(text)
        if args.append_results:
            with (HERE / "RESULTS.md").open("a") as results:
                results.write(text)
        return
    chat: dict[str, list[float]] = {"plugin-chat": [], "direct-chat": [], "reload-chat": []}
    chat_cpu: dict[str, list[float]] = {kind: [] for kind in chat}
    gen: dict[str, dict[str, list[float]]] = {"plugin": {}, "direct": {}}
    turns_detail = None
    logging: list[float] = []
    for round_number in range(args.rounds):
        order = list(chat) if round_number % 2 == 0 else list(chat)[::-1]
        for kind in order:
            result = run_child(kind, args.threads, user)
            chat[kind].append(result["seconds"])
            chat_cpu[kind].append(result["cpu"])
            if kind == "plugin-chat":
                turns_detail = result["turns"]
                logging.append(result["logging"])
        for name, figures in run_child("gen", args.threads, user, args.reps).items():
            for key, value in figures.items():
                gen[name].setdefault(key, []).append(value)
        print(f"round {round_number + 1}: "
              + ", ".join(f"{k} {v[-1]:.2f} s (cpu {chat_cpu[k][-1]:.2f} s)" for k, v in chat.items())
              + ", " + ", ".join(f"{k} {v['decode_tps'][-1]:.1f} tok/s" for k, v in gen.items()), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in chat.items()}
    med_cpu = {k: statistics.median(v) for k, v in chat_cpu.items()}
    gmed = {name: {key: statistics.median(values) for key, values in figures.items()} for name, figures in gen.items()}
    ratio = med["plugin-chat"] / med["direct-chat"]
    ratio_cpu = med_cpu["plugin-chat"] / med_cpu["direct-chat"]
    speed = gmed["plugin"]["decode_tps"] / gmed["direct"]["decode_tps"]
    speed_cpu = gmed["plugin"]["cpu_tps"] / gmed["direct"]["cpu_tps"]
    prompt_total = sum(t["input"] for t in turns_detail or [])
    cached_total = sum(t["cached"] for t in turns_detail or [])
    lines = [
        "",
        "## Local models: 8-turn chat and generation speed (bench_local.py)",
        "",
        f"Machine: {machine_line()}; load average at the start {load_before}, at the end {_load()}. "
        f"llama-cpp-python {_version('llama-cpp-python')}, llm {_version('llm')}, {args.threads} thread(s), CPU only.",
        f"Model: random-weight Mixtral-style GGUF from tests/gguf_factory.py, {model.stat().st_size / 1e6:.0f} MB "
        "(512 wide, 8 layers, 8 experts / 2 used, F16, context 4096). Chat: 8 user turns of 150 words, replies of "
        f"up to {REPLY_TOKENS} tokens, temperature 0. Each chat is a fresh child process timed from before the model "
        "loads (and llama_cpp is imported) to the last token: wall time, and CPU time of the process (steadier on a "
        f"shared machine). Medians of {args.rounds} interleaved rounds.",
        "",
        "| 8-turn chat | wall, median | CPU, median | wall, all rounds (s) |",
        "|---|---|---|---|",
        f"| plugin: llm Python API, `conversation.prompt()` per turn, streamed and logged (as `llm chat`) | "
        f"{med['plugin-chat']:.2f} s | {med_cpu['plugin-chat']:.2f} s | {_all(chat['plugin-chat'])} |",
        f"| llama-cpp-python directly, one `Llama` kept loaded | {med['direct-chat']:.2f} s | "
        f"{med_cpu['direct-chat']:.2f} s | {_all(chat['direct-chat'])} |",
        f"| llama-cpp-python, `Llama` loaded per turn (llm-llama-cpp 0.3 style) | {med['reload-chat']:.2f} s | "
        f"{med_cpu['reload-chat']:.2f} s | {_all(chat['reload-chat'])} |",
        "",
        f"Plugin / direct: **{ratio:.2f}x** wall, **{ratio_cpu:.2f}x** CPU (target <= 1.2x); load per turn / plugin: "
        f"**{med['reload-chat'] / med['plugin-chat']:.1f}x** wall, {med_cpu['reload-chat'] / med_cpu['plugin-chat']:.1f}x "
        f"CPU. Through the plugin the 8 turns read {prompt_total} prompt tokens, {cached_total} of them from the KV "
        f"cache ({100 * cached_total / max(prompt_total, 1):.0f}%); logging the 8 responses to logs.db took "
        f"{statistics.median(logging) * 1000:.0f} ms of the plugin's wall time.",
        "",
        f"| generation, {GEN_TOKENS} tokens | decode tokens/s | end to end tokens/s | tokens per CPU second |",
        "|---|---|---|---|",
        f"| plugin (`model.prompt`, streamed) | {gmed['plugin']['decode_tps']:.1f} | "
        f"{gmed['plugin']['end_to_end_tps']:.1f} | {gmed['plugin']['cpu_tps']:.1f} |",
        f"| llama-cpp-python `create_chat_completion(stream=True)` | {gmed['direct']['decode_tps']:.1f} | "
        f"{gmed['direct']['end_to_end_tps']:.1f} | {gmed['direct']['cpu_tps']:.1f} |",
        "",
        f"Plugin / direct generation speed: **{speed:.3f}** decode, **{speed_cpu:.3f}** per CPU second (target >= 0.90). "
        "Both run in one child process, alternating, on the same file and settings; decode tokens/s = "
        "(tokens - 1) / (last token - first token); medians of the runs in each child, then of the rounds.",
        "",
    ]
    text = "\n".join(lines)
    if args.part == "all":
        text += mamba_section(args, user, load_before)
    print(text)
    if args.append_results:
        with (HERE / "RESULTS.md").open("a") as results:
            results.write(text)


def mamba_section(args: argparse.Namespace, user: str, load_before: str) -> str:
    """The Mamba-2 8-turn chat, plugin against llama-cpp-python with one ``Llama`` kept loaded."""
    kinds = ("mamba-plugin-chat", "mamba-direct-chat")
    wall: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    turns = None
    for round_number in range(args.rounds):
        for kind in kinds if round_number % 2 == 0 else kinds[::-1]:
            result = run_child(kind, args.threads, user)
            wall[kind].append(result["seconds"])
            cpu[kind].append(result["cpu"])
            turns = result.get("turns") or turns
        print(f"mamba round {round_number + 1}: "
              + ", ".join(f"{k} {wall[k][-1]:.2f} s (cpu {cpu[k][-1]:.2f} s)" for k in kinds), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    prompt_total = sum(t["input"] for t in turns or [])
    cached_total = sum(t["cached"] for t in turns or [])
    per_turn = ", ".join(f"{t['input'] - t['cached']}" for t in turns or [])
    return "\n".join([
        "",
        "## Codestral Mamba's architecture: 8-turn chat on a Mamba-2 model (bench_local.py --part mamba)",
        "",
        f"Machine: {machine_line()}; load average at the start {load_before}, at the end {_load()}. "
        f"llama-cpp-python {_version('llama-cpp-python')}, llm {_version('llm')}, {args.threads} thread(s), CPU only.",
        f"Model: random-weight Mamba-2 GGUF from tests/gguf_factory.py, {MAMBA_MODEL.stat().st_size / 1e6:.0f} MB "
        "(512 wide, 8 layers, d_inner 1024, d_state 64, 1 group, head_dim 64, F16). The same chat as above: 8 user "
        f"turns of 150 words, replies of up to {REPLY_TOKENS} tokens, temperature 0, each chat a fresh child process "
        f"timed from before the model loads to the last token. Medians of {args.rounds} interleaved rounds.",
        "",
        "| 8-turn chat, Mamba-2 | wall, median | CPU, median | wall, all rounds (s) |",
        "|---|---|---|---|",
        f"| plugin: llm Python API, `conversation.prompt()` per turn, streamed and logged (as `llm chat`) | "
        f"{med['mamba-plugin-chat']:.2f} s | {med_cpu['mamba-plugin-chat']:.2f} s | {_all(wall['mamba-plugin-chat'])} |",
        f"| llama-cpp-python directly, one `Llama` kept loaded, `create_chat_completion` | "
        f"{med['mamba-direct-chat']:.2f} s | {med_cpu['mamba-direct-chat']:.2f} s | {_all(wall['mamba-direct-chat'])} |",
        "",
        f"Direct / plugin: **{med['mamba-direct-chat'] / med['mamba-plugin-chat']:.1f}x** wall, "
        f"**{med_cpu['mamba-direct-chat'] / med_cpu['mamba-plugin-chat']:.1f}x** CPU. Through the plugin the 8 turns "
        f"read {prompt_total} prompt tokens, {cached_total} of them from the recurrent state "
        f"({100 * cached_total / max(prompt_total, 1):.0f}%); prompt tokens evaluated per turn: {per_turn}. "
        "llama-cpp-python used directly re-tokenizes each reply's text (other ids than the ones sampled) and "
        "formats the prompt with its own template, so from turn 2 on its prompt diverges from what the state "
        "holds and it re-reads the whole conversation.",
        "",
    ])


def _load() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "?"


def _all(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def _version(distribution: str) -> str:
    from importlib.metadata import version

    try:
        return version(distribution)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
