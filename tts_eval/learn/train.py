"""``tts-eval train-prm``: fine-tune a causal LM as a token-classification PRM on step labels.

The model is the base's ``AutoModelForTokenClassification`` (two classes; class 1 = a good step),
trained by transformers' ``Trainer`` on the positions where a search will read it: every row is
rendered by the ``token_classification`` PRM format (:class:`tts_eval.prm.formats.TokenClassificationFormat`,
TRL's ``PRMTrainer`` layout: [bos] + problem, then each step followed by the separator), and only
the last separator token of each step carries a label (-100 elsewhere). Rendering training rows
with the format that scores them at search time makes the two agree by construction. TRL's
``PRMTrainer`` does the same tokenisation, but it lives in ``trl.experimental.prm`` only up to trl
1.13.0 and is gone from 1.14 on, so tts-eval uses transformers' ``Trainer`` directly (no pin).

- Data: one or more step data sets in TRL's stepwise format (``tts-eval label`` folders or files,
  :func:`tts_eval.learn.data.load_steps`), concatenated and split by problem (validation share
  ``val_fraction``, by a stable hash of the problem; the validation problems are recorded).
- Smaller and faster (``layers=K``): only the base's first K decoder layers are kept (the
  config's ``num_hidden_layers``; the later layers' weights are not loaded), so training and every
  later PRM forward cost about K/L of the full model's; ``negatives_per_positive=R`` keeps at most
  R training rows whose solution ends wrong per row that ends right (a weak policy's solutions are
  mostly wrong), drawn at random.
- LoRA (``lora=True``, peft): adapters on every linear layer, the classification head trained
  whole; merged into the weights before saving, so the result loads like a full fine-tune.
- Resumable: checkpoints every ``save_steps`` under ``<output_dir>/checkpoints``; re-run with the
  same arguments, training goes on from the last one (other settings or data are refused).
- The result: ``<output_dir>`` holds the model (``*ForTokenClassification``: ``prm=<output_dir>``
  auto-detects ``prm_type=token_classification``), its tokenizer, and ``tts_eval_prm.json``
  (base, data, settings, split, time, tokens, validation metrics), and the step AUROC / accuracy
  of the saved PRM on the validation rows, scored through the same loading code as a search.

Errors (one line, before the model loads): a data set of another format, an empty split, training
labels of a single class, a base without a tokenizer, bad settings.

What this module does not do: label (``label``) or write a training loop of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError, MissingDependencyError
from tts_eval.learn.data import STEPWISE, StepData, load_steps, problem_key, split_by_problem
from tts_eval.settings import check_float, check_int, check_model_path, invalid

logger = logging.getLogger(__name__)

SCOPE = "tts-eval train-prm"
META = "tts_eval_prm.json"
CHECKPOINTS = "checkpoints"
LABEL_NAMES = {0: "bad", 1: "good"}


@dataclass(frozen=True)
class TrainSettings:
    """Training settings (defaults: full fine-tuning, 2 epochs, AdamW at 2e-5, batches of 8)."""

    epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    val_fraction: float = 0.1
    seed: int = 0
    separator: str = "\n"
    lora: bool = False
    lora_r: int = 16
    save_steps: int = 200
    warmup_ratio: float = 0.05
    dtype: str = "float32"
    layers: int | None = None
    negatives_per_positive: float | None = None

    def __post_init__(self) -> None:
        check_float("epochs", self.epochs, "a number > 0", lambda v: v > 0, scope=SCOPE)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise invalid("max_steps", self.max_steps, "an integer (-1: use epochs)", scope=SCOPE)
        if self.max_steps == 0 or self.max_steps < -1:
            raise invalid("max_steps", self.max_steps, "-1 or an integer >= 1", scope=SCOPE)
        check_float(
            "learning_rate", self.learning_rate, "a number > 0", lambda v: v > 0, scope=SCOPE
        )
        for name in ("batch_size", "grad_accum", "lora_r", "save_steps"):
            check_int(name, getattr(self, name), 1, scope=SCOPE)
        check_int("max_length", self.max_length, 8, scope=SCOPE)
        check_float(
            "val_fraction",
            self.val_fraction,
            "a number in [0, 1)",
            lambda v: 0 <= v < 1,
            scope=SCOPE,
        )
        check_float(
            "warmup_ratio",
            self.warmup_ratio,
            "a number in [0, 1)",
            lambda v: 0 <= v < 1,
            scope=SCOPE,
        )
        if not isinstance(self.separator, str) or not self.separator:
            raise invalid("separator", self.separator, "a non-empty string", scope=SCOPE)
        if self.dtype not in ("float32", "bfloat16"):
            raise invalid("dtype", self.dtype, "float32, bfloat16", scope=SCOPE)
        if self.layers is not None:
            check_int("layers", self.layers, 1, scope=SCOPE)
        if self.negatives_per_positive is not None:
            check_float(
                "negatives_per_positive",
                self.negatives_per_positive,
                "a number > 0",
                lambda v: v > 0,
                scope=SCOPE,
            )


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load_training_data(paths: Sequence[str]) -> StepData:
    """The stepwise data sets at ``paths``, concatenated (one-line error for another format)."""
    import datasets

    if not paths:
        raise DataError("--data is required; accepted: one or more step data sets")
    parts = []
    for path in paths:
        data = load_steps(path)
        if data.format != STEPWISE:
            raise DataError(
                f"data set {path} is in {data.format} format (problem, steps, label); "
                "accepted for training: TRL stepwise supervision (prompt, completions, labels)"
            )
        keep = [
            c for c in ("prompt", "completions", "labels", "uid") if c in data.rows.column_names
        ]
        parts.append(data.rows.select_columns(keep))
    if len({tuple(sorted(p.column_names)) for p in parts}) > 1:
        parts = [p.select_columns(["prompt", "completions", "labels"]) for p in parts]
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return StepData(rows, STEPWISE, ", ".join(map(str, paths)))


def check_splits(train: Any, validation: Any, val_fraction: float) -> None:
    if len(train) == 0:
        raise DataError(
            "the training split is empty; accepted: more labelled problems or a smaller "
            "--val-fraction"
        )
    if val_fraction > 0 and len(validation) == 0:
        raise DataError(
            f"the validation split is empty (--val-fraction {val_fraction} of "
            f"{len(train)} rows took no problem); accepted: more problems, a larger "
            "--val-fraction, or --val-fraction 0"
        )
    classes = {bool(y) for row in train["labels"] for y in row}
    if len(classes) < 2:
        only = "good" if classes == {True} else "bad"
        raise DataError(
            f"the training labels are all {only} ({sum(len(r) for r in train['labels'])} steps); "
            "accepted: data with both good and bad steps (label more problems, or with rollouts)"
        )


def balance_rows(rows: Any, ratio: float | None, seed: int) -> Any:
    """At most ``ratio`` rows whose solution ends wrong (last label False) per row that ends
    right, drawn at random (seeded); all rows when ``ratio`` is None or negatives are fewer."""
    if ratio is None:
        return rows
    import random

    last = [bool(labels[-1]) for labels in rows["labels"]]
    positives = [i for i, y in enumerate(last) if y]
    negatives = [i for i, y in enumerate(last) if not y]
    keep = int(ratio * len(positives))
    if keep >= len(negatives):
        return rows
    chosen = sorted(random.Random(seed).sample(negatives, keep))
    logger.info(
        "balanced: %d rows ending right, %d of %d ending wrong",
        len(positives),
        keep,
        len(negatives),
    )
    return rows.select(sorted(positives + chosen))


def encode_row(
    fmt: Any, prompt: str, steps: Sequence[str], labels: Sequence[bool], max_length: int
):
    """``(input_ids, labels)`` of one row: the format's tokens, -100 except at each step's read
    position (cut at ``max_length``; None when no labelled position is left)."""
    formatted = fmt.format(prompt, list(steps))
    ids = list(formatted.token_ids[:max_length])
    targets = [-100] * len(ids)
    kept = 0
    for position, label in zip(formatted.read_positions, labels, strict=True):
        if position < max_length:
            targets[position] = int(bool(label))
            kept += 1
    return (ids, targets) if kept else None


def _tokenized(rows: Any, fmt: Any, max_length: int) -> tuple[list[dict[str, Any]], int]:
    out, dropped = [], 0
    for row in rows:
        encoded = encode_row(fmt, row["prompt"], row["completions"], row["labels"], max_length)
        if encoded is None:
            dropped += 1
            continue
        ids, targets = encoded
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": targets})
    return out, dropped


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------


def _load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except Exception as err:  # noqa: BLE001 - one line naming the argument
        raise DataError(
            f"--model {model} has no tokenizer transformers can load ({type(err).__name__}); "
            "accepted: a model folder with its tokenizer files"
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _identity(model: str, data: StepData, settings: TrainSettings) -> dict[str, Any]:
    digest = hashlib.sha256()
    for row in data.rows:
        digest.update(json.dumps([row["prompt"], row["completions"], row["labels"]]).encode())
    return {
        "base": model,
        "data": data.source,
        "data_sha256": digest.hexdigest()[:20],
        "settings": dataclasses.asdict(settings),
    }


def _finished(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The report of a finished training of the same identity in ``folder``, if there is one."""
    path = folder / META
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return report if report.get("identity") == identity else None


def _check_resume(folder: Path, identity: dict[str, Any]) -> None:
    path = folder / CHECKPOINTS / "tts_eval_train.json"
    if path.is_file():
        theirs = json.loads(path.read_text())
        for key in identity:
            if theirs.get(key) != identity[key]:
                raise DataError(
                    f"--output_dir {folder} has checkpoints of another training ({key} "
                    "differs); accepted: the same arguments to resume, or another --output_dir"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n")


def train_prm(
    model: str,
    data_paths: Sequence[str],
    output_dir: str | os.PathLike,
    settings: TrainSettings | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, save and validate a token-classification PRM (see the module docstring); returns
    the report written to ``tts_eval_prm.json``."""
    settings = settings or TrainSettings()
    check_model_path("model", model)
    data = load_training_data(list(data_paths))
    train_rows, val_rows = split_by_problem(data, settings.val_fraction, settings.seed)
    check_splits(train_rows, val_rows, settings.val_fraction)
    train_rows = balance_rows(train_rows, settings.negatives_per_positive, settings.seed)
    tokenizer = _load_tokenizer(model)
    from tts_eval.prm.formats import TokenClassificationFormat

    fmt = TokenClassificationFormat.from_tokenizer(tokenizer, settings.separator)
    train_set, dropped = _tokenized(train_rows, fmt, settings.max_length)
    if dropped:
        logger.warning("%d training rows have no step within max_length; left out", dropped)
    if not train_set:
        raise DataError(
            f"no training row has a step within --max-length {settings.max_length}; accepted: a "
            "larger --max-length"
        )
    folder = Path(output_dir)
    identity = _identity(model, data, settings)
    done = _finished(folder, identity)
    if done is not None:
        logger.info("%s: this training is finished (%s); nothing to do", folder, META)
        return done
    _check_resume(folder, identity)

    import torch
    from transformers import (
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )
    from transformers.trainer_utils import get_last_checkpoint

    overrides = {} if settings.layers is None else {"num_hidden_layers": settings.layers}
    net = AutoModelForTokenClassification.from_pretrained(
        model,
        **overrides,
        num_labels=2,
        id2label=LABEL_NAMES,
        label2id={v: k for k, v in LABEL_NAMES.items()},
        dtype=getattr(torch, settings.dtype),
    )
    net.config.pad_token_id = tokenizer.pad_token_id
    if settings.lora:
        net = _with_lora(net, settings)
    args = _training_arguments(
        TrainingArguments,
        output_dir=str(folder / CHECKPOINTS),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        warmup=settings.warmup_ratio,
        lr_scheduler_type="cosine",
        logging_steps=10,
        save_steps=settings.save_steps,
        save_total_limit=2,
        seed=settings.seed,
        report_to=[],
        disable_tqdm=not progress,
        bf16=settings.dtype == "bfloat16",
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=train_set,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    last = (
        get_last_checkpoint(str(folder / CHECKPOINTS)) if (folder / CHECKPOINTS).is_dir() else None
    )
    if last:
        logger.info("resuming from %s", last)
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.monotonic() - started
    final = trainer.model.merge_and_unload() if settings.lora else trainer.model
    final.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))

    tokens_per_epoch = sum(len(r["input_ids"]) for r in train_set)
    steps_done = int(trainer.state.global_step)
    report: dict[str, Any] = {
        "prm_type": "token_classification",
        "step_separator": settings.separator,
        "identity": identity,
        "base": model,
        "data": data.source,
        "settings": dataclasses.asdict(settings),
        "train_rows": len(train_set),
        "validation_rows": len(val_rows),
        "validation_problems": sorted({problem_key(r, STEPWISE) for r in val_rows}),
        "train_steps": steps_done,
        "train_epochs": float(trainer.state.epoch or 0.0),
        "train_tokens": int(round(tokens_per_epoch * float(trainer.state.epoch or 0.0))),
        "train_seconds": seconds,
        "train_loss": result.training_loss,
        "resumed_from": last,
    }
    del trainer, final, net
    report["validation"] = _validate(folder, val_rows, settings, progress)
    (folder / META).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _training_arguments(cls: Any, *, warmup: float, **kwargs: Any) -> Any:
    """``TrainingArguments`` with a warmup ratio and length-grouped batches, spelled as the
    installed transformers spells them (``warmup_ratio`` / ``group_by_length`` up to 4.x;
    ``warmup_steps`` as a fraction / ``train_sampling_strategy`` in 5.x)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if "warmup_ratio" in names:
        kwargs["warmup_ratio"] = warmup
    else:
        kwargs["warmup_steps"] = warmup
    if "group_by_length" in names:
        kwargs["group_by_length"] = True
    elif "train_sampling_strategy" in names:
        kwargs["train_sampling_strategy"] = "group_by_length"
    return cls(**kwargs)


def _with_lora(net: Any, settings: TrainSettings) -> Any:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as err:
        raise MissingDependencyError(
            "--lora needs peft; install it with: pip install 'tts-scaling-eval[learn]' (or pip install peft)"
        ) from err
    import torch

    # every linear layer of the backbone; the classification head is trained whole instead
    heads = {"score", "classifier"}
    targets = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in net.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        - heads
    )
    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=settings.lora_r,
        lora_alpha=2 * settings.lora_r,
        lora_dropout=0.05,
        target_modules=targets,
        modules_to_save=sorted(heads & {n.rsplit(".", 1)[-1] for n, _ in net.named_modules()}),
    )
    return get_peft_model(net, config)


def _validate(folder: Path, val_rows: Any, settings: TrainSettings, progress: bool) -> dict:
    """Step metrics of the saved PRM on the validation rows, loaded as a search loads it."""
    if len(val_rows) == 0:
        return {}
    from tts_eval.learn.evaluate import evaluate_prm
    from tts_eval.settings import PRMConfig

    config = PRMConfig(
        str(folder),
        "token_classification",
        step_separator=settings.separator,
    )
    return evaluate_prm(config, StepData(val_rows, STEPWISE, "validation"), progress=progress)
