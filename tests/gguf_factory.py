"""Write tiny random-weight Mistral/Mixtral/Mamba-2-style GGUF models that real llama.cpp can load, for tests."""

from __future__ import annotations

import functools
import os
import pathlib
import string
import tempfile
from typing import Literal, NamedTuple

import numpy as np

import gguf

__all__ = [
    "MISTRAL_V3_TEMPLATE", "MISTRAL_V1_HF_TEMPLATE", "DEFAULT_WORDS", "MISTRAL_TOKENIZER_FILES",
    "DERIVED_TEKKEN_VERSIONS", "TEKKEN_SPECIAL_NAMES", "write_tiny_pixtral_mmproj",
    "mistral_tokenizer_file", "write_tiny_gguf", "write_tiny_mamba2_gguf", "write_mistral_vocab_gguf",
]  # fmt: skip

# Mistral v3 instruct style ([INST]/[/INST] are control tokens): one BOS, the system prompt(s) are
# prepended to the LAST user message, "</s>" after each assistant turn, user/assistant must alternate.
MISTRAL_V3_TEMPLATE = (
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages if message['role'] == 'system' %}"
    "{%- set ns.system = ns.system + ('\\n\\n' if ns.system else '') + message['content'] %}"
    "{%- endfor %}"
    "{%- set loop_messages = messages | rejectattr('role', 'equalto', 'system') | list %}"
    "{%- set system_message = ns.system %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate"
    " user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + (message['content'] or '') + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported, with the exception of"
    " system messages!') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

# Copied byte for byte from llama-cpp-python 0.3.36, llama_cpp/llama_chat_format.py,
# MISTRAL_INSTRUCT_CHAT_TEMPLATE (HF mistralai/Mistral-7B-Instruct-v0.1). A GGUF carrying exactly this
# template makes llama-cpp-python use its built-in "mistral-instruct" format, which drops system messages.
MISTRAL_V1_HF_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

DEFAULT_WORDS: list[str] = """
the be to of and a in that have I it for not on with he as you do at this but his by from they we say
her she or an will my one all would there their what so up out if about who get which go me when make
can like time no just him know take people into year your good some could them see other than then now
look only come its over think also back after use two how our work first well way even new want because
any these give day most us is are was were been has had did said hello hi welcome thanks please yes okay
sure answer question model brief short long word words text line story poem cat dog bird fish tree
house car road city world water fire earth air sun moon star sky rain snow wind cloud river sea hill
mountain stone green blue red yellow black white small big old young happy sad fast slow hot cold warm
open close begin end start stop run walk talk read write sing play eat drink sleep wake love help keep
find tell ask seem feel try leave call need become put mean let turn show hear live believe hold bring
happen sit stand lose pay meet include continue set learn change lead understand watch follow create
speak allow add spend grow offer remember consider appear buy wait serve dream send expect build stay
fall cut reach kind remain suggest raise pass sell require report decide pull hand part place case
week company system program number group problem fact point home party room mother area money night
friend name idea body information family head service power hour game music book table window door
paper light morning evening apple bread milk tea coffee chair garden school letter color shape
""".split()


def _vocabulary(
    words: list[str], fim_tokens: bool = False, inst_tokens: bool = True
) -> tuple[list[str], list[float], list[int], list[bool]]:
    """Build an SPM vocabulary: specials, control tokens, 256 byte tokens, then normal pieces.

    Returns tokens, scores, token types and, per token, whether the model may generate it (whole words).
    """
    tokens = ["<unk>", "<s>", "</s>"] + (["[INST]", "[/INST]"] if inst_tokens else [])
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.CONTROL] * (len(tokens) - 3)
    if fim_tokens:  # Codestral's fill-in-the-middle control tokens
        tokens += ["[PREFIX]", "[SUFFIX]", "[MIDDLE]"]
        types += [gguf.TokenType.CONTROL] * 3
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces: list[str] = ["\u2581"]
    pieces += list(chars)
    pieces += ["\u2581" + c for c in chars]
    whole: set[str] = set()
    for word in words:
        # SPM only merges a pair if the merged piece exists, so every prefix of "▁word" (and of "word",
        # for words after a newline or a control token) must be a token; a capitalised form lets
        # sentence starts ("Be", "Hello") tokenize into words too.
        for form in dict.fromkeys((word, word[:1].upper() + word[1:])):
            for piece in ("\u2581" + form, form):
                pieces += [piece[:i] for i in range(1, len(piece) + 1)]
            whole.add("\u2581" + form)
    seen = set(tokens)
    normal = [p for p in dict.fromkeys(pieces) if p not in seen]
    tokens += normal
    types += [gguf.TokenType.NORMAL] * len(normal)
    # Longer pieces score higher so that whole words win; specials/bytes score 0.
    scores = [0.0] * (len(tokens) - len(normal)) + [float(len(p)) for p in normal]
    emit = [t in whole for t in tokens]
    return tokens, scores, [int(t) for t in types], emit


# The tokenizer files that mistral-common ships in mistral_common/data/ (MistralTokenizer.v3() and
# MistralTokenizer.v3(is_tekken=True) load these two): Mistral 7B v0.3's SentencePiece vocabulary (32768
# tokens, also Codestral Mamba's) and Mistral Nemo's tekken vocabulary (131072 tokens).
MISTRAL_TOKENIZER_FILES: dict[str, str] = {
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "tekken": "tekken_240718.json",
}

# Today's Mistral models (Mistral Small 3.x, Devstral, Magistral, Ministral 3) use later instruct versions of the
# tekken tokenizer, whose files mistral-common does not ship: v7 ([SYSTEM_PROMPT] blocks, [TOOL_CONTENT] in tool
# results), v11 (calls as [TOOL_CALLS]name[CALL_ID]id[ARGS]{...}) and v13 (no call ids, tools before the first
# user message, [THINK]...[/THINK]). "tekken-v7", "tekken-v11" and "tekken-v13" are Nemo's tekken file with
# that version and these named special tokens (the layout of Mistral Small 3.x's and Magistral's tekken.json:
# [ARGS], [CALL_ID], [THINK], [/THINK] at 32-35); all three give the same GGUF vocabulary.
DERIVED_TEKKEN_VERSIONS: dict[str, str] = {"tekken-v7": "v7", "tekken-v11": "v11", "tekken-v13": "v13"}
TEKKEN_SPECIAL_NAMES: dict[int, str] = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 32: "[ARGS]", 33: "[CALL_ID]", 34: "[THINK]", 35: "[/THINK]",
}  # fmt: skip

_CONST = 0  # the reserved constant embedding dimension: no layer writes to it

_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


def mistral_tokenizer_file(kind: str) -> pathlib.Path:
    """The installed mistral-common's tokenizer file for ``kind`` (ImportError without mistral-common); for the
    ``DERIVED_TEKKEN_VERSIONS``, a derived file written once into the temporary directory."""
    import importlib.metadata
    import json

    if kind not in DERIVED_TEKKEN_VERSIONS:
        return pathlib.Path(str(importlib.resources.files("mistral_common") / "data" / MISTRAL_TOKENIZER_FILES[kind]))
    version = importlib.metadata.version("mistral-common")
    path = pathlib.Path(tempfile.gettempdir()) / f"gguf-factory-{kind}-mistral-common-{version}.json"
    if not path.exists():
        data = json.loads(mistral_tokenizer_file("tekken").read_text())
        count = data["config"]["default_num_special_tokens"]
        data["config"] = {**data["config"], "version": DERIVED_TEKKEN_VERSIONS[kind]}
        data["special_tokens"] = [
            {"rank": i, "token_str": TEKKEN_SPECIAL_NAMES.get(i, f"<SPECIAL_{i}>"), "is_control": True}
            for i in range(count)
        ]
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps(data))
        part.replace(path)
    return path


def _file_type(dtype: str) -> gguf.LlamaFileType:
    if dtype not in _FILE_TYPES:
        raise ValueError(f"dtype must be 'f32', 'f16' or 'q8_0', not {dtype!r}")
    return _FILE_TYPES[dtype]


class _Tensors:
    """Adds tensors to ``writer``: matrices in ``dtype``, the rest (``f32``) in F32; random ones from ``seed``.

    numpy shapes are ggml shapes reversed: a (rows=out, cols=in) array is ggml (in, out).
    """

    def __init__(self, writer: gguf.GGUFWriter, dtype: str, seed: int) -> None:
        self.writer = writer
        self.rng = np.random.default_rng(seed)
        self.np_dtype = np.float16 if dtype == "f16" else np.float32
        self.qtype = gguf.GGMLQuantizationType.Q8_0 if dtype == "q8_0" else None

    def rand(self, *shape: int, scale: float) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    def matrix(self, name: str, arr: np.ndarray) -> None:
        if self.qtype is None:
            self.writer.add_tensor(name, arr.astype(self.np_dtype, copy=False))
        else:
            self.writer.add_tensor(name, gguf.quants.quantize(arr, self.qtype), raw_dtype=self.qtype)

    def f32(self, name: str, arr: np.ndarray) -> None:
        self.writer.add_tensor(name, np.asarray(arr, dtype=np.float32))

    def embedding(self, n_vocab: int, n_embd: int) -> None:
        embd = self.rand(n_vocab, n_embd, scale=1.0)
        embd[:, _CONST] = 1.0
        self.matrix("token_embd.weight", embd)

    def head(self, emit: np.ndarray, n_embd: int) -> None:
        """Output norm and output: only tokens where ``emit`` is True can ever be sampled."""
        self.f32("output_norm.weight", np.ones(n_embd))
        out = self.rand(len(emit), n_embd, scale=3.0 * n_embd**-0.5)
        out[:, _CONST] = 0.0
        mute = ~emit
        out[mute, :] = 0.0
        out[mute, _CONST] = -1000.0  # logit = -1000 * (positive normalised constant): never sampled
        self.matrix("output.weight", out)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_toy_vocab(
    writer: gguf.GGUFWriter, tokens: list[str], scores: list[float], types: list[int], chat_template: str | None
) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def _llama_hparams(
    writer: gguf.GGUFWriter, *, context_length: int, n_embd: int, n_layer: int, n_ff: int, n_head: int,
    n_head_kv: int, n_vocab: int,
) -> None:  # fmt: skip
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_vocab_size(n_vocab)


def _llama_layers(
    t: _Tensors, *, n_embd: int, n_layer: int, n_ff: int, n_head: int, n_head_kv: int, moe: bool, n_expert: int
) -> None:
    """Attention and (MoE) feed-forward blocks whose outputs leave dimension ``_CONST`` alone."""
    n_embd_kv = n_embd // n_head * n_head_kv
    for i in range(n_layer):
        blk = f"blk.{i}"
        t.f32(f"{blk}.attn_norm.weight", np.ones(n_embd))
        t.matrix(f"{blk}.attn_q.weight", t.rand(n_embd, n_embd, scale=n_embd**-0.5))
        t.matrix(f"{blk}.attn_k.weight", t.rand(n_embd_kv, n_embd, scale=n_embd**-0.5))
        t.matrix(f"{blk}.attn_v.weight", t.rand(n_embd_kv, n_embd, scale=n_embd**-0.5))
        attn_out = t.rand(n_embd, n_embd, scale=n_embd**-0.5)
        attn_out[_CONST, :] = 0.0
        t.matrix(f"{blk}.attn_output.weight", attn_out)
        t.f32(f"{blk}.ffn_norm.weight", np.ones(n_embd))
        if moe:
            t.f32(f"{blk}.ffn_gate_inp.weight", t.rand(n_expert, n_embd, scale=n_embd**-0.5))
            t.matrix(f"{blk}.ffn_gate_exps.weight", t.rand(n_expert, n_ff, n_embd, scale=n_embd**-0.5))
            t.matrix(f"{blk}.ffn_up_exps.weight", t.rand(n_expert, n_ff, n_embd, scale=n_embd**-0.5))
            down = t.rand(n_expert, n_embd, n_ff, scale=n_ff**-0.5)
            down[:, _CONST, :] = 0.0
            t.matrix(f"{blk}.ffn_down_exps.weight", down)
        else:
            t.matrix(f"{blk}.ffn_gate.weight", t.rand(n_ff, n_embd, scale=n_embd**-0.5))
            t.matrix(f"{blk}.ffn_up.weight", t.rand(n_ff, n_embd, scale=n_embd**-0.5))
            down = t.rand(n_embd, n_ff, scale=n_ff**-0.5)
            down[_CONST, :] = 0.0
            t.matrix(f"{blk}.ffn_down.weight", down)


def _mamba2_hparams(
    writer: gguf.GGUFWriter, *, context_length: int, n_embd: int, n_layer: int, d_inner: int, d_state: int,
    n_group: int, head_dim: int, d_conv: int, n_vocab: int,
) -> None:  # fmt: skip
    if d_inner % head_dim or d_inner % n_group:
        raise ValueError("d_inner must divide by head_dim and by n_group")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(0)  # unused by Mamba-2; llama.cpp's converter writes 0 too
    writer.add_head_count(0)  # likewise
    writer.add_block_count(n_layer)
    writer.add_ssm_conv_kernel(d_conv)
    writer.add_ssm_inner_size(d_inner)
    writer.add_ssm_state_size(d_state)
    writer.add_ssm_time_step_rank(d_inner // head_dim)  # the number of SSM heads
    writer.add_ssm_group_count(n_group)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)


def _mamba2_layers(
    t: _Tensors, *, n_embd: int, n_layer: int, d_inner: int, d_state: int, n_group: int, head_dim: int, d_conv: int
) -> None:
    """Mamba-2 mixer blocks (shapes as llama.cpp's LLM_ARCH_MAMBA2 loader wants) whose outputs leave
    dimension ``_CONST`` alone. Tensor names come from gguf's tables."""
    n_head = d_inner // head_dim
    conv_dim = d_inner + 2 * n_group * d_state  # x, B and C go through the convolution
    d_in_proj = d_inner + conv_dim + n_head  # z, then x B C, then dt

    def name(tensor: gguf.MODEL_TENSOR, bid: int, suffix: str = ".weight") -> str:
        return gguf.TENSOR_NAMES[tensor].format(bid=bid) + suffix

    T = gguf.MODEL_TENSOR
    for i in range(n_layer):
        t.f32(name(T.ATTN_NORM, i), np.ones(n_embd))
        t.matrix(name(T.SSM_IN, i), t.rand(d_in_proj, n_embd, scale=n_embd**-0.5))
        # ggml_ssm_conv on the CPU reads the kernel as F32, whatever the dtype of the matrices
        t.f32(name(T.SSM_CONV1D, i), t.rand(conv_dim, d_conv, scale=d_conv**-0.5))
        t.f32(name(T.SSM_CONV1D, i, ".bias"), np.zeros(conv_dim))
        dt = t.rng.uniform(1e-3, 1e-1, n_head)
        t.f32(name(T.SSM_DT, i, ".bias"), np.log(np.expm1(dt)))  # softplus(bias) = dt, as Mamba-2 inits
        t.f32(name(T.SSM_A, i, ""), -t.rng.uniform(1.0, 16.0, (n_head, 1)))  # A = -exp(A_log) < 0
        t.f32(name(T.SSM_D, i, ""), np.ones((n_head, 1)))
        t.f32(name(T.SSM_NORM, i), np.ones((n_group, d_inner // n_group)))
        out = t.rand(n_embd, d_inner, scale=d_inner**-0.5)
        out[_CONST, :] = 0.0
        t.matrix(name(T.SSM_OUT, i), out)


def write_tiny_gguf(
    path: str | os.PathLike[str],
    *,
    moe: bool = False,
    n_embd: int = 64,
    n_layer: int = 2,
    n_ff: int = 128,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_expert: int = 8,
    n_expert_used: int = 2,
    context_length: int = 2048,
    chat_template: str | None = MISTRAL_V3_TEMPLATE,
    seed: int = 0,
    words: list[str] | None = None,
    dtype: str = "f16",
    fim_tokens: bool = False,
    inst_tokens: bool = True,
) -> pathlib.Path:
    """Write a random-weight llama-architecture GGUF (Mistral-like, or Mixtral-like if ``moe``) to ``path``.

    The SPM vocabulary holds ``<unk>``/``<s>``/``</s>`` (ids 0/1/2), control tokens ``[INST]``/``[/INST]``,
    the 256 byte tokens and ``▁word`` pieces (with all prefixes) for ``words`` (default ``DEFAULT_WORDS``).
    Embedding dimension 0 is a constant that no layer writes to, and the output rows of every token but
    the whole ``▁word`` pieces (so control tokens including EOS, byte tokens, word prefixes) weigh it
    strongly negative: the model only ever emits whole words like " hello", never EOS, so ``max_tokens``
    sets the length and streamed chunks (one per token) are never held back.
    ``dtype`` ("f32", "f16" or "q8_0"; q8_0 needs n_embd and n_ff divisible by 32) applies to matrices;
    norms and the MoE router are F32. Same arguments, same bytes.
    ``chat_template=None`` leaves ``tokenizer.chat_template`` out. ``fim_tokens`` adds Codestral's control
    tokens ``[PREFIX]``/``[SUFFIX]``/``[MIDDLE]`` (ids 5/6/7, after ``[/INST]``; the byte tokens and words
    move up by 3). ``inst_tokens=False`` leaves ``[INST]``/``[/INST]`` out of the vocabulary, as in Mistral
    7B v0.1/v0.2's and Mixtral 8x7B's (v1 tokenizer: the markers are plain text); the ids after ``</s>`` move
    down by 2. Returns the path as a ``pathlib.Path``.
    """
    file_type = _file_type(dtype)
    if moe and not 0 < n_expert_used <= n_expert:
        raise ValueError("need 0 < n_expert_used <= n_expert")
    path = pathlib.Path(path)
    tokens, scores, types, emit = _vocabulary(DEFAULT_WORDS if words is None else list(words), fim_tokens,
                                              inst_tokens)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-mixtral" if moe else "tiny-mistral")
    writer.add_file_type(file_type)
    _llama_hparams(
        writer, context_length=context_length, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head,
        n_head_kv=n_head_kv, n_vocab=len(tokens),
    )  # fmt: skip
    if moe:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
    _add_toy_vocab(writer, tokens, scores, types, chat_template)
    t = _Tensors(writer, dtype, seed)
    t.embedding(len(tokens), n_embd)
    _llama_layers(t, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv, moe=moe,
                  n_expert=n_expert)  # fmt: skip
    t.head(np.array(emit), n_embd)
    _finish(writer)
    return path


def write_tiny_mamba2_gguf(
    path: str | os.PathLike[str],
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    d_inner: int = 128,
    d_state: int = 16,
    n_group: int = 2,
    head_dim: int = 16,
    d_conv: int = 4,
    context_length: int = 2048,
    chat_template: str | None = MISTRAL_V3_TEMPLATE,
    seed: int = 0,
    words: list[str] | None = None,
    dtype: str = "f16",
    fim_tokens: bool = False,
) -> pathlib.Path:
    """Write a random-weight Mamba-2 GGUF (architecture ``mamba2``, like Codestral Mamba) to ``path``.

    Same vocabulary, template, ``fim_tokens``, ``dtype`` and constant-dimension trick as ``write_tiny_gguf``
    (only whole ``▁word`` tokens are ever sampled; temperature 0 is deterministic), with Mamba-2 mixer
    blocks instead of attention + feed-forward. Codestral Mamba 7B (transformers' Mamba2Config defaults)
    has n_embd 4096, n_layer 64, d_inner 8192, d_state 128, n_group 8, head_dim 64 (so 128 SSM heads,
    written as ``ssm.time_step_rank``), d_conv 4 and the v3 SentencePiece vocabulary.
    The per-layer tensors (numpy shapes; ggml's are reversed) are ``ssm_in`` (2*d_inner + 2*n_group*d_state
    + n_heads, n_embd), ``ssm_conv1d.weight`` (d_inner + 2*n_group*d_state, d_conv) in F32 and its bias,
    ``ssm_dt.bias`` (n_heads,), ``ssm_a`` and ``ssm_d`` (n_heads, 1), ``ssm_norm.weight``
    (n_group, d_inner/n_group) and ``ssm_out`` (n_embd, d_inner), after ``attn_norm``.

    llama-cpp-python 0.3.36 treats the model as recurrent: its state cannot be cut back to a shorter
    prefix. A second prompt on the same ``Llama`` that starts with everything evaluated so far (the
    earlier prompt and the generated tokens but the last, which is sampled and never evaluated) evaluates
    only the new tokens ("N prefix-match hit" with ``verbose``); any other prompt, one that diverges or is
    a strict prefix, makes ``llama_memory_seq_rm`` refuse ("N prefix-match found but partial kv removal
    not supported, re-evaluating full prompt"), the state is cleared and the whole prompt evaluated again.
    (A llama-architecture model instead keeps the common prefix and evaluates only the rest.)
    """
    file_type = _file_type(dtype)
    path = pathlib.Path(path)
    tokens, scores, types, emit = _vocabulary(DEFAULT_WORDS if words is None else list(words), fim_tokens)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MAMBA2])
    writer.add_name("tiny-mamba2")
    writer.add_file_type(file_type)
    dims = dict(n_embd=n_embd, n_layer=n_layer, d_inner=d_inner, d_state=d_state, n_group=n_group,
                head_dim=head_dim, d_conv=d_conv)  # fmt: skip
    _mamba2_hparams(writer, context_length=context_length, n_vocab=len(tokens), **dims)
    _add_toy_vocab(writer, tokens, scores, types, chat_template)
    t = _Tensors(writer, dtype, seed)
    t.embedding(len(tokens), n_embd)
    _mamba2_layers(t, **dims)
    t.head(np.array(emit), n_embd)
    _finish(writer)
    return path


class _RealVocab(NamedTuple):
    model: str  # tokenizer.ggml.model
    tokens: list[bytes]
    scores: list[float]
    types: list[int]
    merges: list[str] | None  # BPE (tekken) only
    bos: int
    eos: int
    unk: int
    pad: int
    emit: np.ndarray  # NORMAL tokens that are whole UTF-8 text on their own


@functools.cache
def _real_vocab(kind: str) -> _RealVocab:
    """Read mistral-common's ``kind`` tokenizer through gguf's ``MistralVocab``, as llama.cpp's converter
    does for Mistral-format checkpoints (it picks the file by name from a model directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / ("tokenizer.model.v3" if kind == "v3" else "tekken.json")).symlink_to(
            mistral_tokenizer_file(kind)
        )
        vocab = gguf.MistralVocab(pathlib.Path(tmp))
    tokens, scores, types = (list(column) for column in zip(*vocab.all_tokens()))
    emit = np.array(types) == gguf.TokenType.NORMAL
    merges = None
    if vocab.tokenizer_type == gguf.MistralTokenizerType.tekken:
        merges = vocab.extract_vocab_merges_from_model()
        # BPE token texts spell bytes with GPT-2's byte-to-unicode map; single bytes 0x80-0xFF and other
        # partial UTF-8 sequences are not text on their own.
        byte_of = {c: b for b, c in gguf.vocab.bytes_to_unicode().items()}

        def whole(text: bytes) -> bool:
            try:
                bytes(byte_of[c] for c in text.decode()).decode("utf-8")
            except UnicodeDecodeError:
                return False
            return True

        emit &= np.array([whole(token) for token in tokens])
    return _RealVocab(
        vocab.gguf_tokenizer_model, tokens, scores, [int(t) for t in types], merges,
        vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id, emit,
    )  # fmt: skip


def write_mistral_vocab_gguf(
    path: str | os.PathLike[str],
    tokenizer: str,
    *,
    arch: Literal["llama", "mamba2"] = "llama",
    add_space_prefix: bool | None = None,
    chat_template: str | None = None,
    n_embd: int = 32,
    n_layer: int = 1,
    context_length: int = 4096,
    dtype: str = "f16",
    seed: int = 0,
) -> pathlib.Path:
    """Write a random-weight GGUF carrying one of Mistral's real vocabularies, for token-id checks.

    ``tokenizer`` "v3" is Mistral 7B v0.3's SentencePiece vocabulary (also Codestral Mamba's): 32768
    tokens, ``tokenizer.ggml.model`` "llama", ``<unk>`` typed UNKNOWN, ids 1-750 (``<s>``, ``</s>``,
    ``[INST]``, ... ``[control_N]``) CONTROL, ``<0x00>``-``<0xFF>`` (ids 771-1026) BYTE. It needs mistral-common's
    optional ``sentencepiece`` package. "tekken" is Mistral Nemo's: 131072 tokens, model "gpt2" with
    pre-tokenizer "tekken" and the BPE merges, its first 1000 (special) tokens CONTROL ("tekken-v7", "-v11",
    "-v13": the same with ``TEKKEN_SPECIAL_NAMES``, see ``DERIVED_TEKKEN_VERSIONS``). Both are read from
    ``MISTRAL_TOKENIZER_FILES`` with gguf's ``MistralVocab``, as llama.cpp's converter does; bos 1, eos 2,
    unk 0, pad as MistralVocab says (v3: eos, tekken: 11 ``<pad>``), add_bos true, add_eos false.
    ``add_space_prefix`` (v3 only) writes ``tokenizer.ggml.add_space_prefix``; None leaves it out, and
    llama.cpp then defaults to true for SPM vocabularies.
    ``arch`` "llama" has 2 heads (1 KV head) and n_ff 2*n_embd; "mamba2" has d_inner 2*n_embd, head_dim
    16, d_state 16 and 1 group. As in ``write_tiny_gguf``, only whole-text NORMAL tokens are ever sampled
    (never EOS, control, byte or partial-UTF-8 tokens). Same arguments, same bytes.
    """
    if tokenizer not in MISTRAL_TOKENIZER_FILES and tokenizer not in DERIVED_TEKKEN_VERSIONS:
        raise ValueError(f"tokenizer must be 'v3', 'tekken' or one of {sorted(DERIVED_TEKKEN_VERSIONS)}, not {tokenizer!r}")
    if arch not in ("llama", "mamba2"):
        raise ValueError(f"arch must be 'llama' or 'mamba2', not {arch!r}")
    if add_space_prefix is not None and tokenizer != "v3":
        raise ValueError("add_space_prefix applies to the SentencePiece (v3) vocabulary only")
    file_type = _file_type(dtype)
    path = pathlib.Path(path)
    vocab = _real_vocab(tokenizer)
    n_vocab = len(vocab.tokens)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"tiny-{arch}-{tokenizer}")
    writer.add_file_type(file_type)
    llama_dims = dict(n_embd=n_embd, n_layer=n_layer, n_ff=2 * n_embd, n_head=2, n_head_kv=1)
    mamba2_dims = dict(n_embd=n_embd, n_layer=n_layer, d_inner=2 * n_embd, d_state=16, n_group=1, head_dim=16,
                       d_conv=4)  # fmt: skip
    if arch == "llama":
        _llama_hparams(writer, context_length=context_length, n_vocab=n_vocab, **llama_dims)
    else:
        _mamba2_hparams(writer, context_length=context_length, n_vocab=n_vocab, **mamba2_dims)
    writer.add_tokenizer_model(vocab.model)
    if vocab.merges is not None:
        writer.add_tokenizer_pre("tekken")
        writer.add_token_merges(vocab.merges)
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_unk_token_id(vocab.unk)
    writer.add_pad_token_id(vocab.pad)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    t = _Tensors(writer, dtype, seed)
    t.embedding(n_vocab, n_embd)
    if arch == "llama":
        _llama_layers(t, moe=False, n_expert=0, **llama_dims)
    else:
        _mamba2_layers(t, **mamba2_dims)
    t.head(vocab.emit, n_embd)
    _finish(writer)
    return path


def write_tiny_pixtral_mmproj(
    path: str | os.PathLike[str],
    *,
    n_embd_text: int = 64,
    n_embd: int = 32,
    n_layer: int = 1,
    n_head: int = 2,
    n_ff: int = 64,
    image_size: int = 64,
    patch_size: int = 16,
    seed: int = 0,
) -> pathlib.Path:
    """Write a random-weight Pixtral-style multimodal projector (GGUF architecture ``clip``, projector type
    ``pixtral``) that llama.cpp's mtmd library loads beside a text model of width ``n_embd_text``.

    As llama.cpp's clip loader reads a Pixtral projector: the ``clip.vision.*`` hyperparameters, image mean
    and std, SiLU; the tensors ``v.patch_embd.weight`` (a patch_size x patch_size convolution over RGB),
    ``v.pre_ln.weight`` (RMS norm), per block ``v.blk.N.{ln1,ln2}.weight``, ``attn_{q,k,v,out}.weight`` and
    the gated feed-forward ``ffn_{gate,up,down}.weight``, then the projector ``mm.1``/``mm.2`` (weight and
    bias; GELU between them) into the text model's width, and ``v.token_embd.img_break``, the [IMG_BREAK]
    embedding mtmd puts after each row of patches. A ``patch_size`` x ``patch_size`` image region becomes
    one image token; rotary positions are 2D (theta 10000), so ``n_embd / n_head`` must divide by 4.
    """
    if n_embd % n_head or (n_embd // n_head) % 4:
        raise ValueError("n_embd / n_head must be a multiple of 4 (2D rotary positions)")
    path = pathlib.Path(path)
    writer = gguf.GGUFWriter(path, "clip")
    writer.add_name("tiny-pixtral-mmproj")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("pixtral")
    writer.add_vision_projection_dim(n_embd_text)
    writer.add_vision_embedding_length(n_embd)
    writer.add_vision_feed_forward_length(n_ff)
    writer.add_vision_block_count(n_layer)
    writer.add_vision_head_count(n_head)
    writer.add_vision_attention_layernorm_eps(1e-5)
    writer.add_vision_image_size(image_size)
    writer.add_vision_patch_size(patch_size)
    writer.add_vision_image_mean([0.48145466, 0.4578275, 0.40821073])
    writer.add_vision_image_std([0.26862954, 0.26130258, 0.27577711])
    writer.add_vision_use_silu(True)
    t = _Tensors(writer, "f32", seed)
    t.f32("v.patch_embd.weight", t.rand(n_embd, 3, patch_size, patch_size, scale=(3 * patch_size**2) ** -0.5))
    t.f32("v.pre_ln.weight", np.ones(n_embd))
    for i in range(n_layer):
        blk = f"v.blk.{i}"
        t.f32(f"{blk}.ln1.weight", np.ones(n_embd))
        t.f32(f"{blk}.ln2.weight", np.ones(n_embd))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t.f32(f"{blk}.{name}.weight", t.rand(n_embd, n_embd, scale=n_embd**-0.5))
        t.f32(f"{blk}.ffn_gate.weight", t.rand(n_ff, n_embd, scale=n_embd**-0.5))
        t.f32(f"{blk}.ffn_up.weight", t.rand(n_ff, n_embd, scale=n_embd**-0.5))
        t.f32(f"{blk}.ffn_down.weight", t.rand(n_embd, n_ff, scale=n_ff**-0.5))
    t.f32("mm.1.weight", t.rand(n_embd_text, n_embd, scale=n_embd**-0.5))
    t.f32("mm.1.bias", np.zeros(n_embd_text))
    t.f32("mm.2.weight", t.rand(n_embd_text, n_embd_text, scale=n_embd_text**-0.5))
    t.f32("mm.2.bias", np.zeros(n_embd_text))
    t.f32("v.token_embd.img_break", t.rand(n_embd_text, scale=1.0))
    _finish(writer)
    return path
