"""Write tiny random-weight Mistral/Mixtral-style GGUF models that real llama.cpp can load, for tests."""

from __future__ import annotations

import os
import pathlib
import string

import numpy as np

import gguf

__all__ = ["MISTRAL_V3_TEMPLATE", "MISTRAL_V1_HF_TEMPLATE", "DEFAULT_WORDS", "write_tiny_gguf"]

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


def _vocabulary(words: list[str], fim_tokens: bool = False) -> tuple[list[str], list[float], list[int], list[bool]]:
    """Build an SPM vocabulary: specials, control tokens, 256 byte tokens, then normal pieces.

    Returns tokens, scores, token types and, per token, whether the model may generate it (whole words).
    """
    tokens = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
             gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
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
    move up by 3). Returns the path as a ``pathlib.Path``.
    """
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    if dtype not in ("f32", "f16", "q8_0"):
        raise ValueError(f"dtype must be 'f32', 'f16' or 'q8_0', not {dtype!r}")
    if moe and not 0 < n_expert_used <= n_expert:
        raise ValueError("need 0 < n_expert_used <= n_expert")
    path = pathlib.Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types, emit = _vocabulary(DEFAULT_WORDS if words is None else list(words), fim_tokens)
    n_vocab = len(tokens)
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    const = 0  # the reserved constant embedding dimension

    if dtype == "f32":
        np_dtype, qtype, file_type = np.float32, None, gguf.LlamaFileType.ALL_F32
    elif dtype == "f16":
        np_dtype, qtype, file_type = np.float16, None, gguf.LlamaFileType.MOSTLY_F16
    else:
        np_dtype, qtype, file_type = np.float32, gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0

    def rand(*shape: int, scale: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-mixtral" if moe else "tiny-mistral")
    writer.add_file_type(file_type)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_vocab_size(n_vocab)
    if moe:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
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

    def matrix(name: str, arr: np.ndarray) -> None:
        if qtype is None:
            writer.add_tensor(name, arr.astype(np_dtype, copy=False))
        else:
            writer.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)

    def norm(name: str, size: int) -> None:
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    # numpy shapes are ggml shapes reversed: a (rows=out, cols=in) array is ggml (in, out).
    embd = rand(n_vocab, n_embd, scale=1.0)
    embd[:, const] = 1.0
    matrix("token_embd.weight", embd)
    for i in range(n_layer):
        blk = f"blk.{i}"
        norm(f"{blk}.attn_norm.weight", n_embd)
        matrix(f"{blk}.attn_q.weight", rand(n_embd, n_embd, scale=n_embd**-0.5))
        matrix(f"{blk}.attn_k.weight", rand(n_embd_kv, n_embd, scale=n_embd**-0.5))
        matrix(f"{blk}.attn_v.weight", rand(n_embd_kv, n_embd, scale=n_embd**-0.5))
        attn_out = rand(n_embd, n_embd, scale=n_embd**-0.5)
        attn_out[const, :] = 0.0  # keep the constant dimension constant
        matrix(f"{blk}.attn_output.weight", attn_out)
        norm(f"{blk}.ffn_norm.weight", n_embd)
        if moe:
            writer.add_tensor(f"{blk}.ffn_gate_inp.weight", rand(n_expert, n_embd, scale=n_embd**-0.5))
            matrix(f"{blk}.ffn_gate_exps.weight", rand(n_expert, n_ff, n_embd, scale=n_embd**-0.5))
            matrix(f"{blk}.ffn_up_exps.weight", rand(n_expert, n_ff, n_embd, scale=n_embd**-0.5))
            down = rand(n_expert, n_embd, n_ff, scale=n_ff**-0.5)
            down[:, const, :] = 0.0
            matrix(f"{blk}.ffn_down_exps.weight", down)
        else:
            matrix(f"{blk}.ffn_gate.weight", rand(n_ff, n_embd, scale=n_embd**-0.5))
            matrix(f"{blk}.ffn_up.weight", rand(n_ff, n_embd, scale=n_embd**-0.5))
            down = rand(n_embd, n_ff, scale=n_ff**-0.5)
            down[const, :] = 0.0
            matrix(f"{blk}.ffn_down.weight", down)
    norm("output_norm.weight", n_embd)
    out = rand(n_vocab, n_embd, scale=3.0 * n_embd**-0.5)
    out[:, const] = 0.0
    mute = ~np.array(emit)
    out[mute, :] = 0.0
    out[mute, const] = -1000.0  # logit = -1000 * (positive normalised constant): never sampled
    matrix("output.weight", out)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
