"""Loading the model pipeline for a worker: preset + weights (local path or s3:// URL, cached locally)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from worker.storage import Storage

if TYPE_CHECKING:
    import torch

    from m4v_core import WorkerSettings
    from model.config import ModelConfig
    from model.parallel.cfg_pair import CfgPair
    from model.pipeline import VideoPipeline
    from model.runtime import RuntimeOptions

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "m4v" / "weights"


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/key/prefix -> (bucket, key/prefix)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 weights URL needs a bucket and a key: {url!r}")
    return bucket, key.rstrip("/")


def fetch_s3_weights(url: str, settings: WorkerSettings, cache_dir: Path) -> Path:
    """Download s3://bucket/key (one file or a prefix) once into cache_dir; later calls reuse it."""
    bucket, key = split_s3_url(url)
    target = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (target / COMPLETE_MARKER).exists():
        log.info("downloading weights", extra={"url": url, "dest": str(target)})
        s3 = Storage.from_settings(settings.model_copy(update={"s3_bucket": bucket}))
        files = s3.download_tree(key, target)
        (target / COMPLETE_MARKER).write_text("\n".join(str(f.relative_to(target)) for f in files))
    files = [line for line in (target / COMPLETE_MARKER).read_text().splitlines() if line]
    single = len(files) == 1 and files[0] == Path(key).name
    return target / files[0] if single else target


def resolve_weights(settings: WorkerSettings, cache_dir: Path | None = None) -> str | None:
    """Local path for Settings.weights (None: the preset's packaged weights)."""
    if settings.weights is None:
        return None
    if settings.weights.startswith("s3://"):
        return str(fetch_s3_weights(settings.weights, settings, cache_dir or default_cache_dir()))
    if not Path(settings.weights).exists():
        raise FileNotFoundError(f"M4V_WEIGHTS {settings.weights!r} does not exist")
    return settings.weights


def runtime_options(
    settings: WorkerSettings, dtype: torch.dtype | None = None, device: str = "cpu"
) -> RuntimeOptions:
    """The speed options of model/runtime.py from M4V_* settings. cuda_graphs "auto" turns graphs on for
    bf16 M4V (MM-DiM) presets: measured correct (same video) and faster there on an H100; for the
    attention baseline they measured slower (docs/PERF.md). Graphs only ever run on CUDA devices.
    overlap_decode "auto" is on for CUDA devices (H100, 121 frames: 50.9 -> 46.7 s with graphs)."""
    import torch

    from model.config import get_preset
    from model.runtime import RuntimeOptions

    graphs = settings.cuda_graphs
    if graphs == "auto":
        mmdim = get_preset(settings.preset).network.single_block == "mmdim"
        graphs = mmdim and dtype == torch.bfloat16
    overlap = settings.overlap_decode
    if overlap == "auto":
        overlap = torch.device(device).type == "cuda"
    return RuntimeOptions(
        attention_backend=settings.attention_backend,
        compile=settings.compile_blocks,
        compile_mode=settings.compile_mode,
        cuda_graphs=graphs,
        vae_tile_batch=settings.vae_tile_batch,
        overlap_decode=overlap,
        graph_lean_capture=settings.graph_lean_capture,
        vae_tile_px=settings.vae_tile_px,
        vae_frame_chunk=settings.vae_frame_chunk,
        graph_fixed_shapes=settings.graph_fixed_shapes,
        graph_context_bucket=settings.graph_context_bucket,
        graph_max_tokens=settings.graph_max_tokens,
    )


def load_pipeline(
    settings: WorkerSettings, device: str, dtype: torch.dtype, cache_dir: Path | None = None
) -> VideoPipeline | CfgPair:
    """Build the preset's pipeline once for this process (M4V_PARALLEL=cfg: with a follower process)."""
    if settings.parallel == "cfg":  # both ranks load the same weights (an s3:// checkpoint fetched once)
        from worker.parallel import load_cfg_pair

        one = settings.model_copy(
            update={"parallel": "none", "weights": resolve_weights(settings, cache_dir)}
        )
        return load_cfg_pair(partial(load_one_pipeline, one, dtype=dtype, cache_dir=cache_dir), device)
    return load_one_pipeline(settings, device, dtype, cache_dir)


def load_one_pipeline(
    settings: WorkerSettings, device: str, dtype: torch.dtype, cache_dir: Path | None = None
) -> VideoPipeline:
    """The preset's pipeline on one device."""
    from model.checkpoint_source import RANDOM_WEIGHTS
    from model.pipeline import VideoPipeline  # torch and the model load here, not at import

    weights = resolve_weights(settings, cache_dir)
    pipe = VideoPipeline.from_preset(
        preset_config(settings),
        weights=weights,
        device=device,
        dtype=dtype,
        scan_backend=settings.scan_backend,
        use_cache=settings.context_cache,
        stand_in_text=settings.text_stand_in,
        runtime=runtime_options(settings, dtype, device),
        allow_random_weights=settings.allow_random_weights,
    )
    if weights is not None:
        pipe.weights_sha256 = weights_sha256(Path(weights))
    elif pipe.weights_source != RANDOM_WEIGHTS:  # the preset's packaged weights
        pipe.weights_sha256 = weights_sha256(Path(pipe.weights_source))
    log.info(
        "pipeline loaded",
        extra={
            "preset": settings.preset,
            "device": device,
            "dtype": str(dtype),
            "weights": pipe.weights_source,
            "weights_sha256": pipe.weights_sha256,
        },
    )
    return pipe


def preset_config(settings: WorkerSettings) -> ModelConfig:
    """The served preset with the settings that belong in its config: where the T5/CLIP encoders live."""
    from model.config import get_preset

    cfg = get_preset(settings.preset)
    text = cfg.text
    if settings.t5_path is not None or settings.clip_path is not None:
        text = dataclasses.replace(
            text, t5_path=settings.t5_path or text.t5_path, clip_path=settings.clip_path or text.clip_path
        )
    return dataclasses.replace(cfg, text=text)


# Text encoders and tokenizers are not part of what the weights sha256 identifies (they are large, and the
# text-encoder paths are checked by loading them).
_UNHASHED_DIRS = {"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"}


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, or of a directory's files ("<sha256>  <relative path>" lines, sorted; hidden
    files and the text-encoder folders left out)."""

    def file_sha(p: Path) -> str:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    if path.is_file():
        return file_sha(path)
    lines = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if not p.is_file() or rel.parts[0] in _UNHASHED_DIRS or any(x.startswith(".") for x in rel.parts):
            continue
        lines.append(f"{file_sha(p)}  {rel.as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
