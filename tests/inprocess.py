"""Run `llm` inside the test process with click's CliRunner: the same CLI as a subprocess, without its
second of start-up. Returns a ``subprocess.CompletedProcess`` so ``assert_cli_ok``/``assert_cli_error``
of conftest work on either; an uncaught exception is appended to stderr as a traceback (which those fail on).
"""

from __future__ import annotations

import subprocess
import traceback

from click.testing import CliRunner


def invoke_llm(*args: str, input: str | None = None, env: dict[str, str | None] | None = None
               ) -> subprocess.CompletedProcess:
    """``llm ARGS`` in-process; ``env`` overrides os.environ for the call (a None value unsets a name)."""
    from llm.cli import cli

    result = CliRunner().invoke(cli, list(args), input=input if input is not None else "", env=env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["llm", *args], result.exit_code, result.stdout, stderr)
