"""llama.cpp and mtmd in this process: importing them, silencing their log, one loaded model per file (a warm KV cache)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from ..errors import MistralSuiteError
from ..options import LOCAL_MAX_DEFAULT_CTX
from .gguf import check_gguf
from .prompt import Dialect, chat_dialect
from .template import LocalChatFormatter
from .vocab import PromptVocab

LOCAL_EMBED_MAX_CTX = 2048
LOCAL_INSTALL_HINT = "llm install 'llm-mistral-suite[local]' (or: pip install 'llm-mistral-suite[local]')"

_log_state: dict[str, Any] = {"verbose": False, "errors": []}  # errors: llama.cpp's latest error lines
_local_log_callback: Any = None  # the ctypes callback must stay referenced while llama.cpp may call it
LOADED: dict[tuple[str, bool], "LoadedLlama"] = {}


def import_llama_cpp() -> Any:
    """``llama_cpp``, with llama.cpp's logging routed through ``_local_log``; a clear error if missing."""
    global _local_log_callback
    try:
        import llama_cpp
    except ImportError:
        raise MistralSuiteError(
            f"Local models need llama-cpp-python, which is not installed. Install it with: {LOCAL_INSTALL_HINT}"
        ) from None
    except Exception as exc:  # the package is there but its compiled library does not load
        raise MistralSuiteError(
            f"llama-cpp-python is installed but does not load ({exc}). Reinstall it with: {LOCAL_INSTALL_HINT}"
        ) from None
    if _local_log_callback is None:
        import ctypes

        _local_log_callback = llama_cpp.llama_log_callback(_local_log)
        llama_cpp.llama_log_set(_local_log_callback, ctypes.c_void_p(0))
    return llama_cpp


def import_mtmd() -> Any:
    """``llama_cpp.mtmd_cpp`` (images), with mtmd's logging (its projector loader's and helpers') routed through
    ``_local_log`` as llama.cpp's is: silent unless verbose, its error lines kept for ``last_llama_error``."""
    import_llama_cpp()
    import llama_cpp.mtmd_cpp as mtmd

    if not _log_state.get("mtmd"):
        import ctypes

        mtmd.mtmd_log_set(_local_log_callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_local_log_callback, ctypes.c_void_p(0))
        _log_state["mtmd"] = True
    return mtmd


def _local_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's and mtmd's log callback: silent unless ``-o verbose 1``; keeps error lines for messages."""
    try:
        message = text.decode("utf-8", "replace")
        if _log_state["verbose"]:
            sys.stderr.write(message)
            sys.stderr.flush()
        if level == 4:  # GGML_LOG_LEVEL_ERROR (ggml's enum: NONE, DEBUG, INFO, WARN, ERROR, CONT)
            errors = _log_state["errors"]
            errors.extend(line.strip() for line in message.splitlines()[: max(0, 8 - len(errors))])  # one per line
    except Exception:  # an exception must never escape into C
        pass


def clear_llama_errors() -> None:
    """Forget the error lines llama.cpp logged so far (before a call whose failure they may explain)."""
    _log_state["errors"].clear()


def last_llama_error() -> str:
    """The most telling error line llama.cpp logged since ``clear_llama_errors``."""
    errors = [line for line in _log_state["errors"] if line]
    telling = [line for line in errors if "error" in line.lower()]
    return (telling or errors or [""])[0]


class LoadedLlama:
    """A ``Llama`` kept loaded for the process, with what is needed to chat with it.

    ``dialect`` is set for Mistral instruct vocabularies (``[INST]`` a control token): their prompts are built
    as token ids (``prompt.py``). Other GGUFs (v1 Mistral models, other families) are fed their own chat
    template's text through ``formatter``."""

    __slots__ = ("llama", "settings", "n_threads", "lock", "formatter", "meter", "vocab", "dialect", "projector")

    def __init__(self, llama: Any, settings: tuple, n_threads: int | None) -> None:
        import threading

        self.llama, self.settings, self.n_threads = llama, settings, n_threads
        self.lock = threading.Lock()
        self.formatter: Optional[LocalChatFormatter] = None
        self.meter: Optional[EvalCounter] = None
        self.vocab: Optional[PromptVocab] = None
        self.dialect: Optional[Dialect] = None
        self.projector: Any = None  # the image projector (vision.py), loaded on the first image

    def close(self) -> None:
        """Free the projector and the model (llama-cpp-python's ``__del__`` fails noisily at interpreter exit)."""
        for resource in (self.projector, self.llama):
            try:
                if resource is not None:
                    resource.close()
            except Exception:
                pass


def default_gpu_layers(llama_cpp: Any) -> int:
    """All layers on the GPU when this llama-cpp-python build can offload, else none."""
    try:
        return -1 if llama_cpp.llama_supports_gpu_offload() else 0
    except Exception:
        return 0


def load_local_llama(path: str, *, embedding: bool = False, n_ctx: int | None = None,
                     n_gpu_layers: int | None = None, n_threads: int | None = None,
                     verbose: bool = False) -> LoadedLlama:
    """The process's ``Llama`` for ``path``, loaded on first use and kept (a KV cache to reuse)."""
    llama_cpp = import_llama_cpp()
    _log_state["verbose"] = bool(verbose)
    key = (str(path), embedding)
    gpu = default_gpu_layers(llama_cpp) if n_gpu_layers is None else n_gpu_layers
    loaded = LOADED.get(key)
    if loaded is not None and loaded.settings[:2] == (n_ctx, gpu) and Path(path).exists():
        if n_threads and n_threads != loaded.n_threads:
            llama_cpp.llama_set_n_threads(loaded.llama.ctx, n_threads, n_threads)
            loaded.n_threads = n_threads
        loaded.llama.verbose = bool(verbose)  # llama-cpp-python's own prints follow this flag
        if loaded.formatter is not None:
            loaded.formatter.show_prompt = bool(verbose)
        return loaded
    if loaded is not None:  # other settings: one model per file, so the old one goes first
        del LOADED[key]
        loaded.close()
    info = check_gguf(path)
    trained = info.context_length or 4096
    ctx = n_ctx or min(trained, LOCAL_EMBED_MAX_CTX if embedding else LOCAL_MAX_DEFAULT_CTX)
    # llama.cpp pads the context to a multiple of 256 but llama-cpp-python sizes its token buffer
    # by the number asked for: ask for the padded size, or prompts in between overflow that buffer.
    ctx = -(-ctx // 256) * 256
    kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": ctx, "n_gpu_layers": gpu, "verbose": bool(verbose)}
    if n_threads:
        kwargs["n_threads"] = kwargs["n_threads_batch"] = n_threads
    if embedding:
        kwargs.update(embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_batch=ctx, n_ubatch=ctx)
    clear_llama_errors()
    try:
        llama = llama_cpp.Llama(**kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        detail = last_llama_error() or str(exc)
        if "context" in str(exc):
            raise MistralSuiteError(
                f"llama.cpp could not create a context of {ctx} tokens for {path} ({detail}). "
                "Try a smaller -o n_ctx."
            ) from None
        raise MistralSuiteError(
            f"llama.cpp could not load {path}: {detail}. The file may be corrupt or truncated, or made for "
            f"a newer llama.cpp than this llama-cpp-python ({getattr(llama_cpp, '__version__', '?')})."
        ) from None
    loaded = LoadedLlama(llama, (n_ctx, gpu, ctx, trained), n_threads)
    if not embedding:
        loaded.formatter = LocalChatFormatter.for_llama(llama)
        loaded.formatter.show_prompt = bool(verbose)
        loaded.meter = EvalCounter(llama)
        loaded.vocab = PromptVocab(llama)
        loaded.dialect = chat_dialect(llama.metadata.get("tokenizer.chat_template"), loaded.vocab,
                                      loaded.formatter.render_raw)
    if not _log_state.get("atexit"):
        import atexit

        atexit.register(close_local_models)
        _log_state["atexit"] = True
    LOADED[key] = loaded
    return loaded


def close_local_models() -> None:
    """Free the loaded models while the interpreter is whole (llama-cpp-python's ``__del__`` fails
    noisily when it runs during interpreter shutdown)."""
    while LOADED:
        _, loaded = LOADED.popitem()
        loaded.close()


class EvalCounter:
    """Counts the tokens llama.cpp evaluates (wraps the ``Llama``'s ``eval``): a completion reads how many
    prompt tokens were really evaluated, the rest came from the KV cache or recurrent state."""

    def __init__(self, llama: Any) -> None:
        self.count = 0
        evaluate = llama.eval

        def counted_eval(tokens: Any) -> None:
            self.count += len(tokens)
            evaluate(tokens)

        llama.eval = counted_eval
