"""Local GGUF models run in this process by llama.cpp (llama-cpp-python, the ``[local]`` extra)."""
