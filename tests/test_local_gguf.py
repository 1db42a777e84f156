"""The GGUF header reader, checked against the gguf package."""

from __future__ import annotations


import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from gguf_factory import MISTRAL_V3_TEMPLATE  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)

from _llm_mistral_suite.local.gguf import read_gguf_info


def test_gguf_header_reader_matches_gguf_package(ggufs):
    import gguf

    for path in (ggufs.dense, ggufs.moe):
        info = read_gguf_info(path)
        reader = gguf.GGUFReader(path)
        fields = {name: field.contents() for name, field in reader.fields.items()}
        assert info.architecture == fields["general.architecture"] == "llama"
        assert info.context_length == fields["llama.context_length"]
        assert info.embedding_length == fields["llama.embedding_length"]
        assert info.tensor_count == len(reader.tensors)
        assert info.metadata["tokenizer.chat_template"] == MISTRAL_V3_TEMPLATE
        assert info.metadata["tokenizer.ggml.tokens"] == {"array_length": len(fields["tokenizer.ggml.tokens"])}
        assert info.data_offset == reader.data_offset
        assert info.data_end == max(t.data_offset + t.n_bytes for t in reader.tensors)
    assert read_gguf_info(ggufs.moe).expert_count == 8
