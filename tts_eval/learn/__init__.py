"""The "learn" half: process labels from the policy's own solutions, a PRM trained on them, and
PRM evaluation without search.

- :mod:`~tts_eval.learn.rollouts`: Monte Carlo step labels (Math-Shepherd), pure over the engine
  and answer protocols;
- :mod:`~tts_eval.learn.label`: ``tts-eval label``, the resumable job that labels a task's
  problems and writes a step-supervision data set (TRL's format);
- :mod:`~tts_eval.learn.data`: reading and writing those data sets (and ProcessBench's format),
  splitting by problem;
- :mod:`~tts_eval.learn.train`: ``tts-eval train-prm``, fine-tuning a causal LM as a
  token-classification PRM with transformers' ``Trainer``;
- :mod:`~tts_eval.learn.metrics`: step AUROC / accuracy and ProcessBench's F1 (pure);
- :mod:`~tts_eval.learn.evaluate`: ``tts-eval prm-eval``, scoring a PRM on labelled steps.

What this package does not do: search (``tts_eval.search``) or run lm-eval evaluations
(``tts_eval.workflow``).
"""
