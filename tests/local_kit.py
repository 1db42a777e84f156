"""Shared parts of the local-model tests: the tiny GGUF files, `llm` runners, registry and log helpers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from click.testing import CliRunner  # noqa: E402
from conftest import assert_cli_ok, run_llm_process  # noqa: E402
from gguf_factory import (  # noqa: E402
    DEFAULT_WORDS, MISTRAL_V1_HF_TEMPLATE, write_tiny_gguf, write_tiny_mamba2_gguf, write_tiny_pixtral_mmproj,
)  # fmt: skip
from inprocess import invoke_llm  # noqa: E402

from _llm_mistral_suite.local import registry

FAST = ("-o", "n_threads", "1")  # steadier than 2 threads on busy 2-core machines


GREEDY = ("-o", "temperature", "0", "-o", "seed", "1", *FAST)


LONG_TEXT = " ".join(DEFAULT_WORDS[i % 120] for i in range(150))  # ~150 words, all in the vocabulary


@pytest.fixture(scope="session")
def ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return SimpleNamespace(
        dense=write_tiny_gguf(folder / "tiny-dense.gguf"),
        moe=write_tiny_gguf(folder / "tiny-moe.gguf", moe=True, seed=1),
        v1=write_tiny_gguf(folder / "tiny-v1.gguf", chat_template=MISTRAL_V1_HF_TEMPLATE, seed=2, inst_tokens=False),
        bare=write_tiny_gguf(folder / "tiny-bare.gguf", chat_template=None, seed=3),
        mamba=write_tiny_mamba2_gguf(folder / "tiny-mamba2.gguf", fim_tokens=True, seed=5),
        mmproj=write_tiny_pixtral_mmproj(folder / "mmproj-tiny-pixtral.gguf", n_embd_text=64),
        folder=folder,
    )


@pytest.fixture
def cli(llm_env):
    """``cli(*args, input=None, **env)``: the installed `llm` in a subprocess, this test's user dir."""

    def run(*args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess:
        return run_llm_process(*args, input=input, env={**llm_env, **env})

    return run


def invoke(*args: str):
    """`llm ARGS` in-process (registry commands: no model runs)."""
    from llm.cli import cli as llm_cli

    return CliRunner().invoke(llm_cli, list(args), catch_exceptions=False)


def last_log(count: int = 1) -> list[dict]:
    """The last ``count`` logged responses, oldest first (read in-process: a subprocess costs a second)."""
    return json.loads(assert_cli_ok(invoke_llm("logs", "--json", "-n", str(count))))


def add(path: Path, *args: str) -> None:
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(path), *args))


# --- in-process: KV cache reuse, options, async -------------------------------------------------------


def _register(user_dir: Path, name: str, path: Path, **extra) -> None:
    registry.update_local_registry(lambda models: models.__setitem__(name, {"path": str(path), "aliases": [], **extra}))
