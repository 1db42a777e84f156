"""The implementation of llm-mistral-suite; private: llm reaches it only through the hooks in ``llm_mistral_suite``."""
