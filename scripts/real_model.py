"""Build SmolLM2-135M-Instruct as a Hugging Face folder (cached) and print its path.

    python scripts/real_model.py [--version V] [--cache DIR]

The builder lives in the package (:mod:`tts_eval.real_model`, the default model of ``tts-eval
demo``); this script and its names (``build_smollm2``, ``model_dir``) are kept for benchmarks,
tests and the README's commands.
"""

from tts_eval.real_model import build_smollm2, cache_root, main, model_dir

__all__ = ["build_smollm2", "cache_root", "model_dir"]

if __name__ == "__main__":
    main()
