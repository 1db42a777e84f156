"""Quick checks of the tiny GGUF factory (no llama_cpp needed)."""

import gguf
import pytest

from gguf_factory import MISTRAL_V1_HF_TEMPLATE, MISTRAL_V3_TEMPLATE, write_tiny_gguf


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
