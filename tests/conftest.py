"""Shared fixtures and helpers: an isolated llm user dir per test, the fake Mistral server, `llm`
subprocess runs (one at a time, or whole scenarios in parallel), and validation of request bodies
against Mistral's OpenAPI spec (../shared/conformance).

Test modules may import the plain helpers from here (``from conftest import SHARED, validate_request``);
pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from fake_mistral import FakeMistral, Upload, spec_names  # noqa: E402

SHARED = Path(__file__).parent.parent.parent / "shared"
OPENAPI = SHARED / "conformance" / "mistral-openapi.json"
RECORDED = SHARED / "conformance" / "recorded"

SENTINEL_KEY = "sk-SENTINEL-7f3a9c"
LLM_RUN_TIMEOUT = 60  # seconds for one `llm` subprocess: a hang fails the test instead of the whole run

# Environment that must never leak from the developer's shell into a test.
SCRUBBED_ENV = (
    "LLM_MISTRAL_KEY", "MISTRAL_API_KEY", "OPENAI_API_KEY", "LLM_MISTRAL_BASE_URL",
    "LLM_MISTRAL_TIMEOUT", "LLM_MISTRAL_MAX_ATTEMPTS", "LLM_MISTRAL_BACKOFF", "LLM_LOAD_PLUGINS",
    "LLM_MODEL", "LLM_DEFAULT_MODEL", "LLM_RAISE_ERRORS", "LLM_MISTRAL_INLINE_LIMIT_MB",
)  # fmt: skip
TEST_SETTINGS = {
    "LLM_MISTRAL_BACKOFF": "0.01",  # full-jitter backoff base: retries take milliseconds
    "LLM_MISTRAL_TIMEOUT": "20",  # a hang fails in seconds, not after the 300 s default
}

# `llm` subprocesses talking to the fake load only this plugin: another installed plugin (llm-mistral
# claims the same aliases) cannot interfere, and each run starts ~0.1 s faster (llm-llama-cpp imports
# llama_cpp at start-up).
ONLY_THIS_PLUGIN = {"LLM_LOAD_PLUGINS": "llm-mistral-suite"}

# Paths of the fake server -> request schema of the spec (later issues add theirs here). "multipart/form-data"
# stands for the path's own multipart schema in the spec (a $ref or inline; "<path>#stream" for stream=true).
REQUEST_SCHEMAS = {
    "/v1/chat/completions": "ChatCompletionRequest",
    "/v1/fim/completions": "FIMCompletionRequest",
    "/v1/embeddings": "EmbeddingRequest",
    "/v1/ocr": "OCRRequest",
    "/v1/audio/speech": "SpeechRequest",
    "/v1/batch/jobs": "CreateBatchJobRequest",
    "/v1/files": "multipart/form-data",
    "/v1/audio/transcriptions": "multipart/form-data",
}


def json_escaped(text: str) -> str:
    """``text`` as a JSON string whose every character is a \\u escape (how some services echo input)."""
    return '"' + "".join(f"\\u{ord(char):04x}" for char in text) + '"'


def isolated_env(user_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: os.environ) without keys and plugin settings, with ``user_dir`` as llm's
    user dir and the test settings (quick retries, a short timeout)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in SCRUBBED_ENV}
    return env | TEST_SETTINGS | {"LLM_USER_PATH": str(user_dir)}


@pytest.fixture(autouse=True)
def isolated_llm(tmp_path, monkeypatch):
    """Each test gets its own llm user dir, no API keys from the shell and quick retries."""
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir()
    for name in SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in isolated_env(user_dir, {}).items():
        monkeypatch.setenv(name, value)
    return user_dir


@pytest.fixture
def user_dir(isolated_llm) -> Path:
    """LLM_USER_PATH of this test (logs.db, keys.json and the model cache live here)."""
    return isolated_llm


# --- API unit tests (pytest-httpx) -------------------------------------------------------------------


@pytest.fixture
def mock(httpx_mock):
    """pytest-httpx's mock; afterwards every chat body sent is checked against the spec."""
    yield httpx_mock
    for request in httpx_mock.get_requests():
        if request.url.path.endswith("/chat/completions"):
            validate_request(json.loads(request.content), "ChatCompletionRequest")


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    return SENTINEL_KEY


# --- the fake Mistral server -----------------------------------------------------------------------


def validate_received(server: FakeMistral) -> None:
    """Validate what ``server`` received against the spec (when ../shared is present): every JSON body against
    the request schema of its path; every form against its path's multipart schema (``validate_form``); every
    line of a JSONL file uploaded for batch against BatchRequest; and every request of a batch job against its
    endpoint's request schema (with the job's model)."""
    if not OPENAPI.exists():
        return
    for rec in server.requests:
        path = rec.path.split("?")[0].rstrip("/")
        schema = REQUEST_SCHEMAS.get(path)
        if rec.method != "POST" or schema is None:
            continue
        if schema != "multipart/form-data":
            if isinstance(rec.body, dict):
                validate_request(rec.body, schema)
            continue
        if not (rec.sent_form or rec.files):
            continue
        validate_form(path, rec.sent_form, rec.files)
        upload = rec.files.get("file")
        if path == "/v1/files" and rec.form_value("purpose") == "batch" and upload is not None:
            for number, line in enumerate(upload.data.decode("utf-8", "replace").splitlines(), 1):
                try:
                    item = json.loads(line) if line.strip() else None
                except ValueError:
                    message = f"line {number} of batch file {upload.filename} is not JSON: {line[:200]}"
                    pytest.fail(message, pytrace=False)
                if item is not None:
                    validate_request(item, "BatchRequest")
    for job in server.batch_jobs.values():
        schema = REQUEST_SCHEMAS.get(job.endpoint)
        for _, body in job.lines if schema and schema != "multipart/form-data" else ():
            if isinstance(body, dict):
                validate_request({"model": job.model, **body} if job.model else body, schema)


def validate_form(path: str, sent_form: dict[str, list[str]], files: dict[str, Upload]) -> bool:
    """Fail the test if a form sent to ``path`` (``/v1/...``) does not match the path's multipart schema in the
    spec (``<path>#stream`` when it asks for a stream): each text field under its spec name (``name[]``, how
    Mistral's SDK names an array field, is the property ``name``) read as the types the schema declares, each
    file part as its file name (a binary string). Where the spec is absent nothing is checked and False is
    returned."""
    if not OPENAPI.exists():
        return False
    from urllib.parse import quote

    import jsonschema.exceptions

    spec = _openapi()

    def kinds(schema: dict) -> set[str]:
        """The JSON types a property schema admits."""
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        found = {schema["type"]} if isinstance(schema.get("type"), str) else set(schema.get("type") or ())
        return found.union(*(kinds(s) for key in ("anyOf", "oneOf", "allOf") for s in schema.get(key, ())))

    def coerce(values: list[str], types: set[str]) -> Any:
        if "array" in types:
            return values
        value = values[-1]
        if "boolean" in types and value.lower() in ("true", "false"):
            return value.lower() == "true"
        for kind, cast in (("integer", int), ("number", float)):
            if kind in types:
                try:
                    return cast(value)
                except ValueError:
                    pass
        return value

    named = spec_names(sent_form)
    streamed = named.get("stream", ["false"])[-1].lower() == "true" and f"{path}#stream" in spec["paths"]
    key = f"{path}#stream" if streamed else path
    form_schema = spec["paths"][key]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in form_schema:
        form_schema = spec["components"]["schemas"][form_schema["$ref"].rsplit("/", 1)[-1]]
    properties = form_schema.get("properties", {})
    form = {name: coerce(values, kinds(properties.get(name, {}))) for name, values in named.items()}
    form |= {name: upload.filename for name, upload in files.items()}  # a binary string
    pointer = "/paths/" + quote(key.replace("~", "~0").replace("/", "~1")) + "/post/requestBody/content"
    ref = f"urn:mistral:openapi#{pointer}/multipart~1form-data/schema"
    errors = list(_spec_validator("BatchRequest").evolve(schema={"$ref": ref}).iter_errors(form))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        where = "/".join(str(p) for p in best.absolute_path)
        pytest.fail(f"multipart form to {key} does not match its schema at /{where}: {best.message}\n"
                    f"form: {json.dumps(form)[:2000]}", pytrace=False)  # fmt: skip
    return True


@contextlib.contextmanager
def serving() -> Iterator[FakeMistral]:
    """A started FakeMistral, stopped afterwards; then every body it received is validated."""
    server = FakeMistral().start()
    try:
        yield server
    finally:
        server.stop()
    validate_received(server)


@pytest.fixture
def fake():
    """A started FakeMistral on loopback. On teardown every request body it received is validated
    against the spec's request schema for its path (when ../shared is present)."""
    with serving() as server:
        yield server


def bodies(fake: FakeMistral, path: str = "/v1/chat/completions") -> list[dict]:
    """The JSON bodies the fake received on ``path``, in order."""
    return [rec.body for rec in fake.requests if rec.path.split("?")[0] == path]


# --- `llm` as a subprocess -------------------------------------------------------------------------


@pytest.fixture
def llm_env(isolated_llm) -> dict[str, str]:
    """Environment for an `llm` subprocess: this test's user dir, scrubbed keys, quick retries."""
    return isolated_env(isolated_llm)


@pytest.fixture
def cli_env(fake, llm_env) -> dict[str, str]:
    """Environment for an `llm` subprocess talking to ``fake`` with the sentinel key (this plugin only)."""
    return {**llm_env, **ONLY_THIS_PLUGIN, "LLM_MISTRAL_BASE_URL": fake.base_url, "LLM_MISTRAL_KEY": SENTINEL_KEY}


def run_llm_process(*args: str, input: str | None = None, env: dict[str, str] | None = None,
                    timeout: float = LLM_RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m llm ARGS`` with this interpreter (the venv where the plugin is installed)."""
    return subprocess.run(
        [sys.executable, "-m", "llm", *args],
        input=input if input is not None else "",  # never inherit the terminal's stdin
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_llm(cli_env):
    """``run_llm(*args, input=None, env=None)``: an `llm` subprocess, by default with ``cli_env``."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = LLM_RUN_TIMEOUT) -> subprocess.CompletedProcess:
        return run_llm_process(*args, input=input, env=cli_env if env is None else env, timeout=timeout)

    return run


def assert_cli_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed run: non-zero exit, exactly one ``Error: `` line on stderr, no traceback anywhere.
    Returns that line; each of ``needles`` must appear in it (case-insensitive)."""
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, output
    assert "Traceback" not in result.stdout + result.stderr, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle.lower() in errors[0].lower(), output
    return errors[0]


def assert_cli_ok(result: subprocess.CompletedProcess) -> str:
    """A successful run; returns stdout."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


# --- CLI scenarios in parallel ---------------------------------------------------------------------
# Each `llm` process spends ~0.9 s of CPU starting up (llm itself imports openai, sqlite_utils, ...), so
# dozens of end-to-end runs one after the other would take most of a minute. A test module can instead
# declare scenarios (the "act" part of its tests), play them all at once on every core, each in its own
# world (fake server, user dir, environment), and let each test assert on what its scenario did.


@dataclass
class CLISession:
    """One scenario's world: its own fake server, llm user dir and `llm` environment."""

    name: str
    user_dir: Path
    fake: FakeMistral
    env: dict[str, str]
    results: list[subprocess.CompletedProcess] = field(default_factory=list)
    value: Any = None  # what the scenario function returned
    error: BaseException | None = None

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
            **env_overrides: str) -> subprocess.CompletedProcess:
        """``llm ARGS`` in this world (``env_overrides`` are added to its environment)."""
        result = run_llm_process(*args, input=input, env=(self.env if env is None else env) | env_overrides)
        self.results.append(result)
        return result

    def bodies(self, path: str = "/v1/chat/completions") -> list[dict]:
        return bodies(self.fake, path)

    def check(self) -> "CLISession":
        """Re-raise what went wrong while the scenario played (a failure, a skip, a spec violation)."""
        if self.error is not None:
            raise self.error
        return self


def play_scenarios(scenarios: dict[str, Callable[[CLISession], Any]], root: Path,
                   workers: int | None = None) -> dict[str, CLISession]:
    """Play ``scenarios`` concurrently, each with a fresh world under ``root``; the sessions keep their
    results and the fake's recorded requests (validated against the spec) for the tests to check."""

    def play(name: str, scenario: Callable[[CLISession], Any]) -> CLISession:
        user_dir = root / name.replace("/", "_") / "llm-user"
        user_dir.mkdir(parents=True)
        fake = FakeMistral()
        session = CLISession(name, user_dir, fake, {})
        try:
            with serving() as fake:
                session.fake = fake
                session.env = isolated_env(user_dir) | ONLY_THIS_PLUGIN | {
                    "LLM_MISTRAL_BASE_URL": fake.base_url, "LLM_MISTRAL_KEY": SENTINEL_KEY,
                }
                session.value = scenario(session)
        except BaseException as exc:  # noqa: BLE001 - kept for the test that owns the scenario
            session.error = exc
        return session

    with concurrent.futures.ThreadPoolExecutor(workers or (os.cpu_count() or 1) + 1) as pool:
        futures = {name: pool.submit(play, name, fn) for name, fn in scenarios.items()}
        return {name: future.result() for name, future in futures.items()}


def selected_scenarios(request: pytest.FixtureRequest, scenarios: dict[str, Callable]) -> dict[str, Callable]:
    """The scenarios some selected test of the requesting module needs: a scenario named N belongs to
    the test whose node id contains ``test_N`` (``test_recorded[x]`` for a scenario ``recorded[x]``)."""
    ids = [item.nodeid for item in request.session.items if item.module is request.module]
    return {name: fn for name, fn in scenarios.items() if any(f"::test_{name}" in i for i in ids)}


# --- ../shared and the spec ------------------------------------------------------------------------


@pytest.fixture
def shared() -> Path:
    """The ../shared folder next to the project, or a clean skip where it is absent (a user's clone)."""
    if not SHARED.is_dir():
        pytest.skip("../shared (reference material and recordings) is not present")
    return SHARED


@pytest.fixture
def recorded(shared) -> Path:
    """../shared/conformance/recorded (real captures of Mistral's API), or a clean skip."""
    return require_recorded()


def require_recorded() -> Path:
    if not RECORDED.is_dir():
        pytest.skip("../shared/conformance/recorded is not present")
    return RECORDED


@functools.lru_cache(maxsize=None)
def _openapi() -> dict:
    return json.loads(OPENAPI.read_text())


@functools.lru_cache(maxsize=None)
def _spec_validator(schema_name: str):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    uri = "urn:mistral:openapi"
    spec = _openapi()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(f"{schema_name} is not in components/schemas of {OPENAPI}")
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; "#/components/schemas/X" refs resolve inside the document.
    registry = Registry().with_resource(uri, Resource.from_contents(spec, default_specification=DRAFT202012))
    schema = {"$ref": f"{uri}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_request(body: Any, schema_name: str = "ChatCompletionRequest") -> bool:
    """Fail the test if ``body`` does not validate against ``components/schemas/<schema_name>``
    of ../shared/conformance/mistral-openapi.json. Where the spec is absent (a user's clone) nothing is
    checked and False is returned: the behaviour under test still runs."""
    if not OPENAPI.exists():
        return False
    validator = _spec_validator(schema_name)
    errors = list(validator.iter_errors(body))
    if errors:
        import jsonschema.exceptions

        best = jsonschema.exceptions.best_match(errors)
        where = "/".join(str(p) for p in best.absolute_path)
        pytest.fail(
            f"request body does not match {schema_name} at /{where}: {best.message}\n"
            f"body: {json.dumps(body)[:2000]}",
            pytrace=False,
        )
    return True
