"""`llm mistral local download`: against a fake Hugging Face on loopback: resume, checksums, registration."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socketserver
import subprocess
import threading

import httpx
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from conftest import assert_cli_error, assert_cli_ok  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)
from local_kit import GREEDY  # noqa: E402

from _llm_mistral_suite.catalog import BUILTIN_CATALOG, RETIRED
from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.local.download import LOCAL_DOWNLOADS, download_file, matching_downloads
from _llm_mistral_suite.local.registry import local_models_dir, read_local_registry


# --- download -----------------------------------------------------------------------------------------


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Hugging Face's shape: /<repo>/resolve/main/<file> redirects (with X-Linked-Etag) to a CDN URL
    that serves the bytes and honours Range."""

    hub: "FakeHub"

    def log_message(self, *args):
        pass

    def do_GET(self):
        hub = self.hub
        hub.requests.append((self.path, self.headers.get("Range")))
        hub.authorizations.append(self.headers.get("Authorization"))
        if "/resolve/main/" in self.path:
            name = self.path.rsplit("/", 1)[1]
            if name not in hub.files:
                self.send_response(404)
                self.send_header("Content-Length", "15")
                self.end_headers()
                self.wfile.write(b"Entry not found")
                return
            self.send_response(302)
            self.send_header("Location", f"/cdn/{name}")
            self.send_header("X-Linked-Etag", f'"{hub.etag or hashlib.sha256(hub.files[name]).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.hub.files[self.path.rsplit("/", 1)[1]]
        start = 0
        found = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if found:
            start = int(found.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if hub.cut_after is not None:
            self.wfile.write(body[: hub.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(body)


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests, self.authorizations = files, [], []
        self.etag: str | None = None
        self.cut_after: int | None = None
        handler = type("Handler", (_HubHandler,), {"hub": self})
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


MISTRAL_7B_FILE = "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf"


def download(hub: "FakeHub", *args: str) -> subprocess.CompletedProcess:
    return invoke_llm("mistral", "local", "download", *args, env={"LLM_MISTRAL_HF_BASE_URL": hub.url})


@pytest.fixture
def hub(ggufs):
    server = FakeHub({MISTRAL_7B_FILE: ggufs.dense.read_bytes()})
    yield server
    server.close()


def test_download_registers_with_aliases(hub, cli, user_dir, ggufs):
    result = cli("mistral", "local", "download", "mistral-7b", LLM_MISTRAL_HF_BASE_URL=hub.url)
    assert_cli_ok(result)
    assert hub.requests[0] == (f"/bartowski/Mistral-7B-Instruct-v0.3-GGUF/resolve/main/{MISTRAL_7B_FILE}", None)
    dest = user_dir / "mistral-local" / MISTRAL_7B_FILE
    assert dest.read_bytes() == ggufs.dense.read_bytes()
    assert not dest.with_name(dest.name + ".part").exists()
    assert "mistral-7b-local" in assert_cli_ok(invoke_llm("mistral", "local", "list"))
    out = assert_cli_ok(cli("-m", "mistral-7b-local", "hello", *GREEDY, "-o", "max_tokens", "3"))
    assert out.strip()
    catalog = assert_cli_ok(invoke_llm("mistral", "local", "download"))
    assert "mixtral-8x7b" in catalog and "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF" in catalog
    [registered] = read_local_registry().values()
    assert registered["download"] == "mistral-7b" and registered["quant"] == "Q4_K_M"


def test_download_resumes_a_partial_file(hub, user_dir, ggufs):
    data = ggufs.dense.read_bytes()
    part = user_dir / "mistral-local" / (MISTRAL_7B_FILE + ".part")
    part.parent.mkdir()
    part.write_bytes(data[:400_000])
    assert_cli_ok(download(hub, "mistral-7b"))
    assert [r for _, r in hub.requests] == ["bytes=400000-", "bytes=400000-"]  # redirect, then the CDN
    assert (user_dir / "mistral-local" / MISTRAL_7B_FILE).read_bytes() == data


def test_interrupted_download_never_registers_then_resumes(hub, user_dir, ggufs):
    hub.cut_after = 300_000
    failed = download(hub, "mistral-7b")
    assert_cli_error(failed, "run the same command again to resume")
    part = user_dir / "mistral-local" / (MISTRAL_7B_FILE + ".part")
    assert part.exists() and 0 < part.stat().st_size < len(ggufs.dense.read_bytes())
    assert not (user_dir / "mistral-local" / MISTRAL_7B_FILE).exists()
    assert read_local_registry() == {}
    have = part.stat().st_size
    hub.cut_after = None
    hub.requests.clear()
    assert_cli_ok(download(hub, "mistral-7b"))
    assert hub.requests[-1][1] == f"bytes={have}-"
    assert (user_dir / "mistral-local" / MISTRAL_7B_FILE).read_bytes() == ggufs.dense.read_bytes()
    assert "mistral-7b" in read_local_registry()


def test_bad_checksum_deletes_and_never_registers(hub, user_dir):
    hub.etag = "0" * 64
    line = assert_cli_error(download(hub, "mistral-7b"),
                            "checksum", "0" * 64)
    assert "sha256" in line
    assert list((user_dir / "mistral-local").iterdir()) == []
    assert read_local_registry() == {}
    assert "mistral-local" not in assert_cli_ok(invoke_llm("models"))


def test_download_errors(hub):
    assert_cli_error(download(hub, "mistral-99b"), "unknown model", "mixtral-8x7b")
    hub.files[MISTRAL_7B_FILE] = b"<html>Service unavailable</html>"  # served whole, with a matching etag
    assert_cli_error(download(hub, "mistral-7b"), "not a usable model", "not a GGUF file")
    assert read_local_registry() == {}
    assert not any(local_models_dir().iterdir())
    hub.files.clear()
    assert_cli_error(download(hub, "mistral-7b"), "404")


def test_a_bad_alias_is_refused_before_downloading(hub):
    assert_cli_error(download(hub, "mistral-7b", "--alias", ""), "'' is not a usable name")
    assert hub.requests == [] and read_local_registry() == {}


def test_every_retired_models_local_route_is_downloadable():
    routes = {entry.local_route for entry in BUILTIN_CATALOG if entry.local_route}
    assert routes and routes <= set(LOCAL_DOWNLOADS) and "codestral-mamba" in routes
    for key, entry in LOCAL_DOWNLOADS.items():
        assert all(name.endswith(".gguf") for name in entry.file_names("Q4_K_M")) and entry.aliases
        assert "Q4_K_M" in entry.quants and entry.context >= 32768
        assert matching_downloads(entry.file_names("Q4_K_M")[0]) == [key]
        assert ("vision" in entry.capabilities) == bool(entry.mmproj)
    assert {"mistral-small-3.2", "devstral-small", "magistral-small", "ministral-8b", "pixtral-12b", "mistral-nemo",
            "codestral-mamba"} <= set(LOCAL_DOWNLOADS)
    assert "reasoning" in LOCAL_DOWNLOADS["magistral-small"].capabilities


def test_retired_models_with_a_download_have_it_as_their_local_route():
    for entry in BUILTIN_CATALOG:
        downloads = matching_downloads(entry.api_name)
        if entry.status == RETIRED and downloads:
            assert entry.local_route in downloads, entry.api_name


def test_download_file_checks_a_pinned_sha256(hub, user_dir, ggufs):
    url = f"{hub.url}/r/resolve/main/{MISTRAL_7B_FILE}"
    data = ggufs.dense.read_bytes()
    dest = user_dir / "pinned.gguf"
    with pytest.raises(MistralSuiteError, match="checksum"):
        download_file(url, dest, sha256="f" * 64)  # a pinned sum wins over the header
    assert not dest.exists()
    with pytest.raises(MistralSuiteError, match="incomplete"):
        download_file(url, dest, size=len(data) + 1)
    download_file(url, dest, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert dest.read_bytes() == data


HF_SECRET = "hf_SECRET-token-42"


def test_hf_token_is_cleaned_and_a_broken_one_refused_without_showing_it(hub, user_dir, monkeypatch):
    """A pasted token's newline used to make httpx refuse the header, quoting it whole in the error."""
    url = f"{hub.url}/r/resolve/main/{MISTRAL_7B_FILE}"
    monkeypatch.setenv("HF_TOKEN", f" {HF_SECRET}\t\n")
    download_file(url, user_dir / "a.gguf")
    assert hub.authorizations == [f"Bearer {HF_SECRET}"] * 2  # the redirect, then the file
    monkeypatch.setenv("HF_TOKEN", "hf_SECRET token")
    with pytest.raises(MistralSuiteError, match="HF_TOKEN cannot be sent: it has a space at position 10") as info:
        download_file(url, user_dir / "b.gguf")
    assert "SECRET" not in str(info.value) and len(hub.authorizations) == 2


def test_no_download_error_shows_the_hf_token(mock, user_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    url = f"https://huggingface.co/r/resolve/main/{MISTRAL_7B_FILE}"
    mock.add_exception(httpx.LocalProtocolError(f"Illegal header value b'Bearer {HF_SECRET}'"))
    mock.add_response(url=url, status_code=401, json={"error": f"Invalid token {HF_SECRET}"})
    for needle in ("interrupted", "HTTP 401"):
        with pytest.raises(MistralSuiteError, match=needle) as info:
            download_file(url, user_dir / "x.gguf")
        assert HF_SECRET not in str(info.value) and "[key]" in str(info.value)


# --- today's models: the catalog, quantisations, projectors ---------------------------------------------------


def test_catalog_table_and_json():
    table = assert_cli_ok(invoke_llm("mistral", "local", "download"))
    header, *lines = table.splitlines()
    assert header.split() == ["MODEL", "SIZE", "CONTEXT", "CAN", "DO", "ALIASES", "SOURCE", "(Hugging", "Face)"]
    row = next(line for line in lines if line.startswith("magistral-small "))
    assert "14.3 GB +proj" in row and "128k" in row and "chat reasoning tools vision" in row
    assert "magistral-small-local" in row and "bartowski/mistralai_Magistral-Small-2509-GGUF" in row
    mamba = next(line for line in lines if line.startswith("codestral-mamba "))
    assert "256k" in mamba and "gabriellarson/Mamba-Codestral-7B-v0.1-GGUF" in mamba
    rows = {row["model"]: row for row in json.loads(assert_cli_ok(invoke_llm("mistral", "local", "download", "--json")))}
    assert rows["pixtral-12b"]["projector"] == "mmproj-mistral-community_pixtral-12b-f16.gguf"
    assert rows["codestral-mamba"]["capabilities"] == ["fim"] and "Q8_0" in rows["codestral-mamba"]["quants"]


def test_download_another_quant_with_its_projector(ggufs, user_dir):
    """A vision model's projector comes with it and is registered with it; --quant picks the file."""
    name = "mistralai_Mistral-Small-3.2-24B-Instruct-2506"
    model_file, projector_file = f"{name}-Q8_0.gguf", f"mmproj-{name}-f16.gguf"
    hub = FakeHub({model_file: ggufs.dense.read_bytes(), projector_file: ggufs.mmproj.read_bytes()})
    try:
        result = download(hub, "mistral-small-local", "--quant", "q8_0")
        assert_cli_ok(result)
        assert [path for path, _ in hub.requests if "/resolve/" in path] == [
            f"/bartowski/{name}-GGUF/resolve/main/{model_file}", f"/bartowski/{name}-GGUF/resolve/main/{projector_file}"]
        entry = read_local_registry()["mistral-small-3.2"]
        assert entry["quant"] == "Q8_0" and entry["aliases"] == ["mistral-small-local"]
        assert entry["mmproj"] == str(user_dir / "mistral-local" / projector_file)
        listing = assert_cli_ok(invoke_llm("mistral", "local", "list"))
        assert "vision" in listing and f"projector: {entry['mmproj']}" in listing
        assert_cli_error(download(hub, "mistral-small-3.2", "--quant", "Q9_9"), "no Q9_9 quantisation", "Q5_K_M")
        hub.files.clear()
        assert_cli_error(download(hub, "devstral-small", "--quant", "Q6_K"), "404", "try another --quant")
    finally:
        hub.close()


def test_codestral_mamba_download_runs(ggufs, user_dir):
    hub = FakeHub({"Mamba-Codestral-7B-v0.1-Q4_K_M.gguf": ggufs.mamba.read_bytes()})
    try:
        assert_cli_ok(download(hub, "codestral-mamba"))
        assert hub.requests[0][0] == ("/gabriellarson/Mamba-Codestral-7B-v0.1-GGUF/resolve/main/"
                                      "Mamba-Codestral-7B-v0.1-Q4_K_M.gguf")
    finally:
        hub.close()
    out = assert_cli_ok(invoke_llm("-m", "codestral-mamba-local", "hello", *GREEDY, "-o", "max_tokens", "3"))
    assert out.strip()
    for retired in ("codestral-mamba", "mistral/open-codestral-mamba"):  # the API's ids name the download now
        line = assert_cli_error(invoke_llm("-m", retired, "hi"), "retired", "llm -m mistral-local/codestral-mamba")
        assert "local download" not in line
    assert "architecture mamba2 (recurrent state)" in assert_cli_ok(invoke_llm("mistral", "local", "list"))


def test_retired_models_show_what_runs_them_here(ggufs, user_dir):
    """`llm mistral models`: a retired model's row names the registered local or server model that runs it,
    or else the command that gets one."""
    def runs_here() -> dict[str, list[str]]:
        rows = json.loads(assert_cli_ok(invoke_llm("mistral", "models", "--json")))
        return {row["id"]: row["runs_here"] for row in rows if row["status"] == "retired"}

    assert runs_here()["mistral/open-codestral-mamba"] == []
    assert_cli_error(invoke_llm("-m", "mistral/open-codestral-mamba", "hi"),
                     "llm mistral local download codestral-mamba")
    table = assert_cli_ok(invoke_llm("mistral", "models"))
    assert "llm mistral local download codestral-mamba" in table
    assert re.search(r"^mistral/pixtral-12b .*llm mistral local download pixtral-12b$", table, re.MULTILINE)
    mamba_copy = user_dir / "Mamba-Codestral-7B-v0.1-Q5_K_M.gguf"
    mamba_copy.write_bytes(ggufs.mamba.read_bytes())
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(mamba_copy), "--name", "my-mamba"))
    pixtral_copy = user_dir / "mistral-community_pixtral-12b-Q4_K_M.gguf"
    pixtral_copy.write_bytes(ggufs.dense.read_bytes())
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(pixtral_copy), "--name", "pix",
                             "--mmproj", str(ggufs.mmproj)))
    assert_cli_ok(invoke_llm("mistral", "servers", "add", "big", "http://127.0.0.1:9/v1",
                             "--model", "mistralai/Mixtral-8x22B-Instruct-v0.1"))
    found = runs_here()
    assert found["mistral/open-codestral-mamba"] == ["mistral-local/my-mamba"]
    assert found["mistral/open-mixtral-8x22b"] == ["big"]
    assert found["mistral/open-mistral-7b"] == []
    assert found["mistral/pixtral-12b"] == found["mistral/pixtral-12b-latest"] == ["mistral-local/pix"]
    line = next(line for line in assert_cli_ok(invoke_llm("mistral", "models")).splitlines()
                if line.startswith("mistral/open-codestral-mamba"))
    assert line.rstrip().endswith("mistral-local/my-mamba")
    # Prompting a retired model names what runs it here, as the table does, instead of a download.
    for retired, runner in (("mistral/open-codestral-mamba", "mistral-local/my-mamba"),
                            ("pixtral-12b", "mistral-local/pix"), ("mistral/open-mixtral-8x22b", "big")):
        line = assert_cli_error(invoke_llm("-m", retired, "hi"), "retired", f"`llm -m {runner}`")
        assert "local download" not in line
