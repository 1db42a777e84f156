"""Images on local models: a model registered with its multimodal projector takes `-a image.png` through llama.cpp's
mtmd library, on a tiny random-weight Pixtral-style projector the tests generate."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

import llm  # noqa: E402
from conftest import assert_cli_error, assert_cli_ok  # noqa: E402
from gguf_factory import write_tiny_pixtral_mmproj  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)
from local_kit import GREEDY, add, last_log  # noqa: E402
from media_files import png_bytes  # noqa: E402

from _llm_mistral_suite.local.prompt import ImageSlot, Turn, encode_chat, read_dialect  # noqa: E402
from _llm_mistral_suite.local.runtime import LOADED, load_local_llama  # noqa: E402


@pytest.fixture
def images(tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    red.write_bytes(png_bytes(48, 32, (200, 30, 60)))
    blue.write_bytes(png_bytes(48, 32, (20, 40, 220)))
    return red, blue


def test_image_prompt_through_the_projector(ggufs, images):
    red, blue = images
    added = assert_cli_ok(invoke_llm("mistral", "local", "add", str(ggufs.dense), "--name", "vis",
                                     "--mmproj", str(ggufs.mmproj)))
    assert "images through its projector" in added
    args = ("-m", "mistral-local/vis", "describe it", *GREEDY, "-o", "max_tokens", "5")
    result = invoke_llm(*args, "-a", str(red), "-o", "verbose", "1")
    first = assert_cli_ok(result)
    assert "<s>[INST]<image> describe it[/INST]" in result.stderr and "tokens and 1 image" in result.stderr
    assert len(first.split()) >= 3
    assert assert_cli_ok(invoke_llm(*args, "-a", str(red))) == first  # deterministic at temperature 0
    other = assert_cli_ok(invoke_llm(*args, "-a", str(blue)))
    plain = assert_cli_ok(invoke_llm(*args))
    assert len({first, other, plain}) == 3  # the image's pixels reach the model
    [with_image] = json.loads(assert_cli_ok(invoke_llm("logs", "--json", "-n", "3")))[:1]
    text_only = last_log()[0]
    assert with_image["input_tokens"] > text_only["input_tokens"] + 5  # the image's embeddings count as tokens
    assert not json.loads(with_image["token_details"] or "{}").get("cached_tokens")  # images are read again


def test_image_prompt_is_quiet_unless_verbose(ggufs, images, cli):
    """mtmd and its projector loader log through their own callbacks (clip_model_loader, "encoding image
    slice", "image decoded"): C-level stderr, so only a real `llm` process shows whether they are silenced."""
    red, _ = images
    add(ggufs.dense, "--name", "vis", "--mmproj", str(ggufs.mmproj))
    args = ("-m", "mistral-local/vis", "-a", str(red), "describe", *GREEDY, "-o", "max_tokens", "3")
    quiet = cli(*args)
    assert assert_cli_ok(quiet).strip() and quiet.stderr == ""
    verbose = cli(*args, "-o", "verbose", "1")
    assert assert_cli_ok(verbose) == quiet.stdout
    assert "clip_model_loader" in verbose.stderr and "image decoded" in verbose.stderr


def test_image_then_continue(ggufs, images):
    red, _ = images
    add(ggufs.dense, "--name", "vis", "--mmproj", str(ggufs.mmproj))
    assert_cli_ok(invoke_llm("-m", "mistral-local/vis", "-a", str(red), "what is this", *GREEDY, "-o", "max_tokens", "3"))
    assert assert_cli_ok(invoke_llm("-c", "and now", *GREEDY, "-o", "max_tokens", "3")).strip()
    one, two = last_log(2)
    assert two["conversation_id"] == one["conversation_id"] and two["input_tokens"] > one["input_tokens"]


def test_image_positions_never_match_a_later_prompt(ggufs, images, user_dir):
    red, _ = images
    add(ggufs.dense, "--name", "vis", "--mmproj", str(ggufs.mmproj))
    model = llm.get_model("mistral-local/vis")
    model.prompt("look", attachments=[llm.Attachment(path=str(red))], temperature=0, max_tokens=2, n_threads=1).text()
    llama = LOADED[(str(ggufs.dense), False)].llama
    assert -1 in list(llama.eval_tokens)  # where the image's embeddings went
    after = model.prompt("look", temperature=0, max_tokens=2, n_threads=1)
    after.text()
    fresh = llm.get_model("mistral-local/vis")
    LOADED.clear()
    assert fresh.prompt("look", temperature=0, max_tokens=2, n_threads=1).text() == after.text()


def test_image_errors(ggufs, images, tmp_path):
    red, _ = images
    add(ggufs.dense, "--name", "plain")
    assert_cli_error(invoke_llm("-m", "mistral-local/plain", "-a", str(red), "hi"),
                     "mistral-local/plain takes no images", "--mmproj")
    assert_cli_error(invoke_llm("mistral", "local", "add", str(ggufs.dense), "--name", "x", "--mmproj", str(ggufs.moe)),
                     "is not a multimodal projector", "llama")
    assert_cli_error(invoke_llm("mistral", "local", "add", str(ggufs.dense), "--name", "x", "--mmproj",
                                str(tmp_path / "missing.gguf")), "No such file")
    narrow = write_tiny_pixtral_mmproj(tmp_path / "mmproj-narrow.gguf", n_embd_text=32)  # not this model's width
    add(ggufs.dense, "--name", "mismatch", "--mmproj", str(narrow))
    line = assert_cli_error(invoke_llm("-m", "mistral-local/mismatch", "-a", str(red), "hi", "-o", "n_threads", "1"),
                            "could not load the image projector")
    assert "made for this model" in line and "n_embd" in line  # mtmd's own reason, through our log callback
    not_an_image = tmp_path / "fake.png"
    not_an_image.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    add(ggufs.dense, "--name", "vis", "--mmproj", str(ggufs.mmproj))
    assert_cli_error(invoke_llm("-m", "mistral-local/vis", "-a", str(not_an_image), "hi", "-o", "n_threads", "1"),
                     "could not decode the image")


def test_image_goes_first_in_its_message_after_a_v3_system_prompt(ggufs):
    """As mistral-common encodes a user message with an image: the system prompt's text (v3, last user
    message), then the image, then the message's text."""
    loaded = load_local_llama(str(ggufs.dense), n_threads=1)
    vocab = loaded.vocab
    image = llm.Attachment(content=png_bytes())
    ids = encode_chat([Turn("system", "Be brief."), Turn("user", "What is it?", images=[image])], [],
                      read_dialect(None, vocab), vocab, "m")
    at = next(i for i, item in enumerate(ids) if isinstance(item, ImageSlot))
    assert ids[:2] == [1, vocab.marker("[INST]")]
    assert ids[2:at] == vocab.text("Be brief.\n\n") and ids[at].attachment is image
    assert ids[at + 1:] == [*vocab.text("What is it?"), vocab.marker("[/INST]")]


def test_factory_projector_is_what_mtmd_loads(tmp_path):
    from _llm_mistral_suite.local.gguf import read_gguf_info

    info = read_gguf_info(write_tiny_pixtral_mmproj(tmp_path / "p.gguf", n_embd_text=48))
    assert info.architecture == "clip" and info.metadata["clip.projector_type"] == "pixtral"
    assert info.metadata["clip.vision.projection_dim"] == 48
    with pytest.raises(ValueError, match="multiple of 4"):
        write_tiny_pixtral_mmproj(tmp_path / "q.gguf", n_embd=30, n_head=3)
