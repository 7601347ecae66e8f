"""tts-eval: test-time compute scaling (step-level search with process reward models) on lm-eval.

Importing this package is cheap: it imports neither torch, transformers, vllm nor lm_eval.
"""

__version__ = "0.1.0"
