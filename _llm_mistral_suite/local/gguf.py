"""GGUF files: a small header reader (no numpy, no gguf package) for what a model is and whether the file is whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection

from ..errors import MistralSuiteError

# GGML tensor type -> (elements per block, bytes per block), as in gguf.constants.GGML_QUANT_SIZES.
_GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
_SPECIAL_TOKEN_TYPES = (3, 4)  # llama_token_type CONTROL and USER_DEFINED: read as one token where they appear


# Architectures whose llama.cpp memory is a recurrent state (or partly one) instead of a KV cache: it cannot be
# cut back to a shorter prefix, so a prompt that does not extend what was evaluated is read again in full.
RECURRENT_ARCHITECTURES = frozenset({
    "mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "jamba", "falcon-h1", "granitehybrid", "lfm2",
    "nemotron_h", "plamo2", "qwen3next",
})  # fmt: skip


class GGUFError(ValueError):
    """A file that llama.cpp cannot read as GGUF; the message says why, for the user."""


class GGUFInfo:
    """What ``local list`` shows and the loader checks, read from a GGUF header."""

    __slots__ = ("path", "version", "metadata", "tensor_count", "data_offset", "data_end", "file_size",
                 "control_tokens")

    def __init__(self, path: Path, version: int, metadata: dict[str, Any], tensor_count: int,
                 data_offset: int, data_end: int, file_size: int, control_tokens: dict[str, int] | None = None) -> None:
        self.path, self.version, self.metadata, self.tensor_count = path, version, metadata, tensor_count
        self.data_offset, self.data_end, self.file_size = data_offset, data_end, file_size
        self.control_tokens = control_tokens or {}  # the asked-for control token texts the vocabulary has -> ids

    def _arch(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture") or "?")

    @property
    def recurrent(self) -> bool:
        return self.architecture in RECURRENT_ARCHITECTURES

    @property
    def chat_template(self) -> str:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else ""

    @property
    def context_length(self) -> int | None:
        value = self._arch("context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def expert_count(self) -> int | None:
        value = self._arch("expert_count")
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def expert_used_count(self) -> int | None:
        value = self._arch("expert_used_count")
        return int(value) if isinstance(value, int) else None

    @property
    def embedding_length(self) -> int | None:
        value = self._arch("embedding_length")
        return int(value) if isinstance(value, int) else None


def read_gguf_info(path: str | os.PathLike[str], control_names: Collection[str] = ()) -> GGUFInfo:
    """Read a GGUF file's header (key/values and tensor table) and check the file holds its tensors.

    Reads only the header pages (through mmap), so it is quick even for a 26 GB file. Large arrays
    (the vocabulary) are skipped; arrays of up to 16 items are kept. ``control_names``: token texts to look
    up in the vocabulary (``control_tokens``: those that are control or user-defined tokens, by id). Raises
    ``GGUFError``.
    """
    import mmap
    import struct

    path = Path(path).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise GGUFError(f"{path} is a symbolic link that leads nowhere (its target is missing, or the links loop)")
        raise GGUFError(f"No such file: {path}")
    if path.is_dir():
        raise GGUFError(f"{path} is a directory, not a GGUF file")
    if not path.is_file():  # a named pipe (FIFO) or a device: opening one can wait forever
        raise GGUFError(f"{path} is not a regular file (a named pipe or a device?), so not a GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        magic = handle.read(4)
        if magic != b"GGUF":
            raise GGUFError(
                f"{path} is not a GGUF file (llama.cpp reads only GGUF; "
                f"this file starts with {magic!r}). Download or convert the model to .gguf."
            )
        if size < 24:
            raise GGUFError(f"{path} is a corrupt GGUF file: it ends inside the header ({size} bytes)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos = 4

            def take(fmt: str) -> Any:
                nonlocal pos
                width = struct.calcsize(fmt)
                if pos + width > size:
                    raise GGUFError(f"{path} is a corrupt GGUF file: it ends inside the header (at byte {pos})")
                value = struct.unpack_from(fmt, buf, pos)[0]
                pos += width
                return value

            def string() -> str:
                nonlocal pos
                length = take("<Q")
                if pos + length > size:
                    raise GGUFError(f"{path} is a corrupt GGUF file: a string runs past the end (at byte {pos})")
                text = bytes(buf[pos:pos + length]).decode("utf-8", "replace")
                pos += length
                return text

            def skip_string() -> None:
                nonlocal pos
                length = take("<Q")
                pos += length

            def value(kind: int) -> Any:
                nonlocal pos
                if kind in _GGUF_SCALARS:
                    return take(_GGUF_SCALARS[kind])
                if kind == 8:
                    return string()
                if kind == 9:
                    item_kind, count = take("<I"), take("<Q")
                    if count <= 16:
                        return [value(item_kind) for _ in range(count)]
                    if item_kind in _GGUF_SCALAR_SIZES:
                        pos += count * _GGUF_SCALAR_SIZES[item_kind]
                    elif item_kind == 8:
                        for _ in range(count):
                            skip_string()
                    else:
                        for _ in range(count):
                            value(item_kind)
                    if pos > size:
                        raise GGUFError(f"{path} is a corrupt GGUF file: an array runs past the end")
                    return {"array_length": count}
                raise GGUFError(f"{path} is a corrupt GGUF file: unknown value type {kind} at byte {pos}")

            version = take("<I")
            if version not in (2, 3):
                raise GGUFError(f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3")
            tensor_count, kv_count = take("<Q"), take("<Q")
            if kv_count > 1_000_000 or tensor_count > 10_000_000:
                raise GGUFError(f"{path} is a corrupt GGUF file: implausible header counts")
            metadata: dict[str, Any] = {}
            vocab_arrays: dict[str, int] = {}  # where the vocabulary's arrays start, if control_names asks
            for _ in range(kv_count):
                key = string()
                kind = take("<I")
                if control_names and kind == 9 and key in _VOCAB_ARRAYS:
                    vocab_arrays[key] = pos
                metadata[key] = value(kind)
            control_tokens = _control_tokens(buf, vocab_arrays, control_names) if vocab_arrays else {}
            data_end = 0
            for _ in range(tensor_count):
                name = string()
                n_dims = take("<I")
                if n_dims > 8:
                    raise GGUFError(f"{path} is a corrupt GGUF file: tensor {name!r} has {n_dims} dimensions")
                elements = 1
                for _ in range(n_dims):
                    elements *= take("<Q")
                kind, offset = take("<I"), take("<Q")
                block = _GGML_BLOCKS.get(kind)
                nbytes = elements // block[0] * block[1] if block else 0
                data_end = max(data_end, offset + nbytes)
            alignment = metadata.get("general.alignment")
            alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
            data_offset = -(-pos // alignment) * alignment
    info = GGUFInfo(path, version, metadata, tensor_count, data_offset, data_offset + data_end, size, control_tokens)
    if tensor_count and size < info.data_end:
        raise GGUFError(
            f"{path} is a truncated GGUF file: its tensors need {info.data_end:,} bytes but the file has "
            f"{size:,} (an interrupted download?)"
        )
    return info


def _control_tokens(buf: Any, arrays: dict[str, int], names: Collection[str]) -> dict[str, int]:
    """Which of ``names`` are control or user-defined tokens of the vocabulary whose token texts and types start
    at ``arrays`` (already read whole by the header reader), and their ids: the first token of each text."""
    import struct

    if len(arrays) < len(_VOCAB_ARRAYS):
        return {}
    texts, types = (arrays[key] for key in _VOCAB_ARRAYS)
    text_kind, count = struct.unpack_from("<IQ", buf, texts)
    type_kind, type_count = struct.unpack_from("<IQ", buf, types)
    if text_kind != 8 or type_kind not in (4, 5) or type_count != count:  # strings; uint32 or int32 types
        return {}
    wanted = {name.encode(): name for name in names}
    longest = max(map(len, wanted))
    found: dict[str, int] = {}
    pos = texts + 12
    for token in range(count):
        (length,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        if length <= longest:
            name = wanted.get(buf[pos:pos + length])
            if name is not None and name not in found:
                found[name] = token
        pos += length
    return {name: token for name, token in found.items()
            if struct.unpack_from("<i", buf, types + 12 + 4 * token)[0] in _SPECIAL_TOKEN_TYPES}


def human_size(size: float) -> str:
    """A byte count for people: "4.4 GB"."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def check_gguf(path: str) -> GGUFInfo:
    """``read_gguf_info`` with its failures as errors for the user."""
    try:
        return read_gguf_info(path)
    except GGUFError as exc:
        raise MistralSuiteError(str(exc)) from None
    except OSError as exc:
        raise MistralSuiteError(f"Cannot read {path}: {exc.strerror or exc}") from None
