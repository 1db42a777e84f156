"""Images on local models: the multimodal projector (llama.cpp's mtmd) loaded beside the model, and image prompts evaluated."""

from __future__ import annotations

import ctypes
from typing import Any

from ..errors import MistralSuiteError
from .gguf import check_gguf
from .prompt import ImageSlot
from .runtime import (
    LoadedLlama,
    clear_llama_errors,
    default_gpu_layers,
    import_llama_cpp,
    import_mtmd,
    last_llama_error,
)


class Projector:
    """An mtmd context: the projector GGUF loaded for one model, freed when the model is."""

    __slots__ = ("path", "context", "mtmd")

    def __init__(self, path: str, context: Any, mtmd: Any) -> None:
        self.path, self.context, self.mtmd = path, context, mtmd

    def close(self) -> None:
        if self.context is not None:
            self.mtmd.mtmd_free(self.context)
            self.context = None


def load_projector(loaded: LoadedLlama, path: str, model_id: str) -> Projector:
    """The model's projector, loaded on its first image and kept with the model."""
    if loaded.projector is not None and loaded.projector.path == path:
        return loaded.projector
    mtmd = import_mtmd()
    llama_cpp = import_llama_cpp()
    info = check_gguf(path)
    if info.architecture != "clip":
        raise MistralSuiteError(f"{path}, the image projector of {model_id}, is not a projector (architecture "
                                f"{info.architecture}, not clip).")
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = bool(default_gpu_layers(llama_cpp)) and loaded.settings[1] != 0
    params.print_timings = False
    params.warmup = False
    if loaded.n_threads:
        params.n_threads = loaded.n_threads
    clear_llama_errors()
    context = mtmd.mtmd_init_from_file(path.encode(), loaded.llama.model, params)
    if not context:
        detail = last_llama_error()
        raise MistralSuiteError(f"llama.cpp could not load the image projector {path} for {model_id}"
                                + (f": {detail}" if detail else "") + ". Is it the projector made for this model?")
    if not mtmd.mtmd_support_vision(context):
        mtmd.mtmd_free(context)
        raise MistralSuiteError(f"{path} is a projector without vision: {model_id} cannot take images with it.")
    if loaded.projector is not None:
        loaded.projector.close()
    loaded.projector = Projector(path, context, mtmd)
    return loaded.projector


def _image_chunks(projector: Projector, attachment: Any, model_id: str) -> tuple[Any, Any]:
    """mtmd's chunks for one image: the image's embeddings and the text tokens mtmd puts around them."""
    mtmd = projector.mtmd
    try:
        data = attachment.content_bytes()
    except Exception as exc:
        raise MistralSuiteError(f"Cannot read the image {attachment.path or attachment.url or ''}: {exc}") from None
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(projector.context, buffer, len(data), False)
    if not bitmap:
        raise MistralSuiteError(f"{model_id} could not decode the image {attachment.path or attachment.url or ''} "
                                "(PNG, JPEG, GIF and BMP are read).")
    chunks = mtmd.mtmd_input_chunks_init()
    marker = mtmd.mtmd_default_marker()
    text = mtmd.mtmd_input_text()
    text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
    bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
    status = mtmd.mtmd_tokenize(projector.context, chunks, ctypes.byref(text), bitmaps, 1)
    if status != 0:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        raise MistralSuiteError(f"{model_id} could not prepare the image (mtmd error {status}).")
    return chunks, bitmap


def evaluate_with_images(loaded: LoadedLlama, items: list[Any], mmproj: str, model_id: str,
                         context_error: Any) -> list[int]:
    """Evaluate a prompt of token ids and ``ImageSlot``s from the start (images are not cached between turns);
    returns the ids to hand ``Llama.generate``: what is now evaluated, image positions marked -1 so that no
    later prompt ever matches them as a cached prefix."""
    import llama_cpp

    projector = load_projector(loaded, mmproj, model_id)
    mtmd, llama = projector.mtmd, loaded.llama
    pieces: list[Any] = []  # runs of token ids, and (chunks, bitmap) per image
    try:
        for item in items:
            if isinstance(item, ImageSlot):
                pieces.append(_image_chunks(projector, item.attachment, model_id))
            elif pieces and isinstance(pieces[-1], list):
                pieces[-1].append(item)
            else:
                pieces.append([item])
        total = 0
        for piece in pieces:
            if isinstance(piece, list):
                total += len(piece)
            else:
                total += sum(mtmd.mtmd_input_chunk_get_n_tokens(mtmd.mtmd_input_chunks_get(piece[0], i))
                             for i in range(mtmd.mtmd_input_chunks_size(piece[0])))
        if total >= llama.n_ctx():
            raise context_error(total)
        llama.reset()
        llama._ctx.kv_cache_clear()
        for piece in pieces:
            if isinstance(piece, list):
                llama.eval(piece)
                continue
            chunks = piece[0]
            for index in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, index)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    llama.eval([tokens[i] for i in range(count.value)])
                    continue
                start, new_n_past = llama.n_tokens, llama_cpp.llama_pos(0)
                clear_llama_errors()
                status = mtmd.mtmd_helper_eval_chunk_single(
                    projector.context, llama._ctx.ctx, chunk, llama_cpp.llama_pos(start), llama_cpp.llama_seq_id(0),
                    llama.n_batch, False, ctypes.byref(new_n_past))
                if status != 0:
                    detail = last_llama_error()
                    raise MistralSuiteError(f"llama.cpp could not read the image for {model_id} (mtmd error "
                                            f"{status}{': ' + detail if detail else ''}).")
                llama.n_tokens = new_n_past.value
                llama.input_ids[start:llama.n_tokens] = -1
    finally:
        for piece in pieces:
            if not isinstance(piece, list):
                mtmd.mtmd_input_chunks_free(piece[0])
                mtmd.mtmd_bitmap_free(piece[1])
    return llama.input_ids[: llama.n_tokens].tolist()
