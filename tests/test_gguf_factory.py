"""Checks of the tiny GGUF factory: metadata without llama_cpp, then Mamba-2 loading and generating in llama.cpp."""

import gguf
import pytest

from gguf_factory import (
    DEFAULT_WORDS, MISTRAL_V1_HF_TEMPLATE, MISTRAL_V3_TEMPLATE, write_mistral_vocab_gguf, write_tiny_gguf,
    write_tiny_mamba2_gguf,
)  # fmt: skip


def _fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {name: field.contents() for name, field in reader.fields.items()}


@pytest.mark.parametrize("moe", [False, True])
def test_metadata_and_tensors(tmp_path, moe):
    path = write_tiny_gguf(tmp_path / "m.gguf", moe=moe)
    reader, kv = _fields(path)
    assert kv["general.architecture"] == "llama"
    assert kv["llama.embedding_length"] == 64
    assert kv["llama.block_count"] == 2
    assert kv["llama.rope.dimension_count"] == 16
    assert kv["tokenizer.ggml.model"] == "llama"
    assert kv["tokenizer.chat_template"] == MISTRAL_V3_TEMPLATE
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    assert tokens[:5] == ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    assert types[3] == types[4] == gguf.TokenType.CONTROL
    assert "<0x0A>" in tokens and "\u2581hello" in tokens and "\u2581hell" in tokens
    names = {t.name for t in reader.tensors}
    if moe:
        assert kv["llama.expert_count"] == 8
        assert kv["llama.expert_used_count"] == 2
        assert "blk.1.ffn_gate_exps.weight" in names and "blk.1.ffn_gate.weight" not in names
    else:
        assert "llama.expert_count" not in kv
        assert "blk.1.ffn_gate.weight" in names and "blk.1.ffn_gate_exps.weight" not in names


def test_template_choice_deterministic_and_options(tmp_path):
    a = write_tiny_gguf(tmp_path / "a.gguf", chat_template=MISTRAL_V1_HF_TEMPLATE, seed=3)
    b = write_tiny_gguf(tmp_path / "b.gguf", chat_template=MISTRAL_V1_HF_TEMPLATE, seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert _fields(a)[1]["tokenizer.chat_template"] == MISTRAL_V1_HF_TEMPLATE
    none = write_tiny_gguf(tmp_path / "none.gguf", chat_template=None, dtype="q8_0", moe=True, n_expert=4)
    reader, kv = _fields(none)
    assert "tokenizer.chat_template" not in kv
    assert kv["llama.expert_count"] == 4
    assert {t.tensor_type for t in reader.tensors} == {
        gguf.GGMLQuantizationType.Q8_0,
        gguf.GGMLQuantizationType.F32,
    }


# --- Mamba-2 ------------------------------------------------------------------------------------------

MAMBA2 = gguf.MODEL_ARCH.MAMBA2


def test_mamba2_metadata_tensors_and_shapes(tmp_path):
    path = write_tiny_mamba2_gguf(tmp_path / "m.gguf", fim_tokens=True)
    reader, kv = _fields(path)
    arch = gguf.MODEL_ARCH_NAMES[MAMBA2]
    assert kv["general.architecture"] == arch == "mamba2"
    assert {key: kv[f"{arch}.{key}"] for key in (
        "embedding_length", "block_count", "ssm.conv_kernel", "ssm.inner_size", "ssm.state_size",
        "ssm.time_step_rank", "ssm.group_count",
    )} == {
        "embedding_length": 64, "block_count": 2, "ssm.conv_kernel": 4, "ssm.inner_size": 128,
        "ssm.state_size": 16, "ssm.time_step_rank": 8, "ssm.group_count": 2,
    }  # fmt: skip
    assert kv["tokenizer.chat_template"] == MISTRAL_V3_TEMPLATE
    assert kv["tokenizer.ggml.tokens"][:8] == ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[PREFIX]", "[SUFFIX]",
                                               "[MIDDLE]"]  # fmt: skip
    # every tensor gguf lists for the architecture, in every block, and nothing else
    names = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[MAMBA2] for b in range(2)}
    tensors = {t.name: t for t in reader.tensors}
    assert {name.removesuffix(".weight").removesuffix(".bias") for name in tensors} == names
    n_vocab = len(kv["tokenizer.ggml.tokens"])
    shapes = {name: list(map(int, t.shape)) for name, t in tensors.items()}  # ggml order: innermost first
    assert shapes["token_embd.weight"] == shapes["output.weight"] == [64, n_vocab]
    assert shapes["blk.1.ssm_in.weight"] == [64, 2 * 128 + 2 * 2 * 16 + 8]  # z, x B C, dt
    assert shapes["blk.1.ssm_conv1d.weight"] == [4, 128 + 2 * 2 * 16]
    assert shapes["blk.1.ssm_conv1d.bias"] == [128 + 2 * 2 * 16]
    assert shapes["blk.1.ssm_dt.bias"] == [8]
    assert shapes["blk.1.ssm_a"] == shapes["blk.1.ssm_d"] == [1, 8]
    assert shapes["blk.1.ssm_norm.weight"] == [64, 2]
    assert shapes["blk.1.ssm_out.weight"] == [128, 64]
    assert tensors["blk.0.ssm_conv1d.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.0.ssm_in.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert all(a < 0 for a in tensors["blk.0.ssm_a"].data.ravel())


def test_mamba2_deterministic_and_checked(tmp_path):
    a = write_tiny_mamba2_gguf(tmp_path / "a.gguf", seed=4, dtype="q8_0", chat_template=None)
    b = write_tiny_mamba2_gguf(tmp_path / "b.gguf", seed=4, dtype="q8_0", chat_template=None)
    assert a.read_bytes() == b.read_bytes()
    assert "tokenizer.chat_template" not in _fields(a)[1]
    with pytest.raises(ValueError, match="head_dim"):
        write_tiny_mamba2_gguf(tmp_path / "c.gguf", d_inner=100)
    with pytest.raises(ValueError, match="dtype"):
        write_tiny_mamba2_gguf(tmp_path / "d.gguf", dtype="q4_0")


@pytest.fixture(scope="module")
def mamba2_path(tmp_path_factory):
    return write_tiny_mamba2_gguf(tmp_path_factory.mktemp("mamba2") / "m.gguf")


def _load(path, **kwargs):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(path), n_ctx=256, n_batch=64, n_threads=1, verbose=False, **kwargs)


def _metered(llm) -> list[int]:
    """Record the length of every ``eval`` call on ``llm``: the tokens it runs through the model."""
    calls: list[int] = []
    eval_ = llm.eval

    def metered(tokens):
        calls.append(len(tokens))
        return eval_(tokens)

    llm.eval = metered
    return calls


def test_mamba2_loads_and_generates_whole_words(mamba2_path):
    # (f16 only: on a CPU that lists AMX without enabling it, llama.cpp's AMX kernels for q8_0 trap)
    llm = _load(mamba2_path)
    import llama_cpp

    assert llama_cpp.llama_model_is_recurrent(llm.model)
    out = llm.create_completion("Hello the cat", max_tokens=6, temperature=0)
    assert out["usage"]["completion_tokens"] == 6 and out["choices"][0]["finish_reason"] == "length"
    text = out["choices"][0]["text"]
    assert text.startswith(" ") and len(text.split()) == 6
    assert all(word.lower() in DEFAULT_WORDS for word in text.split()), text


def test_mamba2_same_prompt_same_tokens_on_fresh_llama(mamba2_path):
    runs = []
    for _ in range(2):
        llm = _load(mamba2_path)
        text = llm.create_completion("the dog and the bird", max_tokens=8, temperature=0)["choices"][0]["text"]
        runs.append((text, list(llm.eval_tokens)))
    assert runs[0] == runs[1]
    assert len(runs[0][1]) == 6 + 8 - 1  # BOS + 5 words, then 8 sampled of which the last is not evaluated


def test_mamba2_second_prompt_extends_or_reevaluates(mamba2_path, capsys):
    """A recurrent state only grows: extending what was evaluated costs the new tokens, anything else
    (diverging, or a strict prefix) clears the state and evaluates the whole prompt again."""
    llm = _load(mamba2_path)
    calls = _metered(llm)
    prompt = llm.tokenize(b"Hello the cat and the dog")  # BOS + 6 words
    llm.create_completion(prompt, max_tokens=4, temperature=0)
    assert calls == [7, 1, 1, 1]  # prompt, then each sampled token but the last
    evaluated = list(llm.eval_tokens)
    assert len(evaluated) == llm.n_tokens == 10

    def second(tokens: list[int]) -> tuple[list[int], str]:
        calls.clear()
        llm.verbose = True  # only for llama-cpp-python's own "Llama.generate: ..." lines
        text = llm.create_completion(tokens, max_tokens=4, temperature=0)["choices"][0]["text"]
        llm.verbose = False
        fresh = _load(mamba2_path).create_completion(tokens, max_tokens=4, temperature=0)["choices"][0]["text"]
        assert text == fresh  # the kept (or rebuilt) state is right
        return list(calls), capsys.readouterr().err

    more = llm.tokenize(b"and the bird", add_bos=False)  # "▁and", "▁the", "▁bird"
    calls_, log = second(evaluated + more)  # (a) extends: only the new tokens are evaluated
    assert calls_ == [3, 1, 1, 1]
    assert "10 prefix-match hit, remaining 3 prompt tokens to eval" in log

    diverging = llm.tokenize(b"Hello the cat and red house")  # shares BOS + 4 words with the state
    calls_, log = second(diverging)  # (b) diverges: the whole prompt again
    assert calls_ == [7, 1, 1, 1]
    assert "5 prefix-match found but partial kv removal not supported, re-evaluating full prompt" in log

    calls_, log = second(diverging[:-1])  # a strict prefix of the state: the whole prompt again too
    assert calls_ == [6, 1, 1, 1]
    assert "re-evaluating full prompt" in log


def test_mistral_vocab_gguf_checks_arguments(tmp_path):
    """(Checked before mistral-common is needed; the files themselves are tested in test_tokenizer_oracle.)"""
    with pytest.raises(ValueError, match="add_space_prefix"):
        write_mistral_vocab_gguf(tmp_path / "t.gguf", "tekken", add_space_prefix=True)
    with pytest.raises(ValueError, match="arch"):
        write_mistral_vocab_gguf(tmp_path / "t.gguf", "v3", arch="mixtral")
    with pytest.raises(ValueError, match="tokenizer"):
        write_mistral_vocab_gguf(tmp_path / "t.gguf", "v7")
    assert not (tmp_path / "t.gguf").exists()
