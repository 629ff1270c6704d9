"""Runtime (speed) options of the network, VAE decode and pipeline; none changes the function computed, except
vae_tile_px: tiles blend an approximation of the untiled decode, and a tile as large as the frame is exact.

Defaults are the reference behaviour (dense-mask SDPA, eager, no graphs, one tile at a time, inline decode);
the worker turns on what was measured correct and faster on a GPU (worker/pipeline.py runtime_options).
Each option is measured by bench/gpu_bench.py --variants before it becomes a default (docs/PERF_NOTES.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

AttentionBackend = Literal["sdpa_mask", "flex", "sdpa_split"]
CompileMode = Literal["default", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class RuntimeOptions:
    attention_backend: AttentionBackend = "sdpa_mask"  # joint attention of MM-DiT / attention blocks
    compile: bool = False  # torch.compile each block's forward and forward_cached
    compile_mode: CompileMode = "default"
    cuda_graphs: bool = False  # capture the cached step once per (unit, stage) and replay it (CUDA only)
    vae_tile_batch: int = 1  # spatial tiles decoded in one batch by the streaming VAE decoder
    overlap_decode: bool = False  # decode unit k on a side thread/stream while unit k+1 samples
    vae_channels_last: bool = False  # VAE weights (so its conv3d activations) in channels_last_3d
    cudnn_benchmark: bool = False  # let cuDNN time its conv algorithms per shape (CUDA; process-wide)
    # one warm-up step per capture instead of two, and its output is that step's result (no wasted replay);
    # measured on an H100 (121 frames, m4v-768p): sampling 38.7 -> 32.3 s, same output as eager (GPU test)
    graph_lean_capture: bool = True
    vae_tile_px: int | None = None  # decode tile size in pixels (None: the VAE's own; larger = less overlap)
    # decode at most this many frames per decoder block call (None: a latent frame's 8 at once): the same
    # frames (model/vae_blocks.py run_chunked) with a fraction of the full-resolution activations alive, so
    # a large tile fits; not measured on a GPU yet, so None
    vae_frame_chunk: int | None = None
    # cached-step shapes fixed per (stage, context bucket): caches padded into persistent buffers, so a graph
    # is replayed across units instead of captured per (unit, stage) (model/fixed_shapes.py); not measured
    # on a GPU yet, so off
    graph_fixed_shapes: bool = False
    graph_context_bucket: int = 1024  # context capacity step in tokens (fixed shapes)
    # graphs only for cached steps of at most this many current-frame tokens (None: every step). A large
    # step is GPU-bound, so its capture (a warm-up, the recording, the instantiation) may cost more than
    # its replays save; not measured on a GPU yet, so None
    graph_max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.attention_backend not in get_args(AttentionBackend):
            raise ValueError(
                f"attention_backend {self.attention_backend!r} not in {get_args(AttentionBackend)}"
            )
        if self.compile_mode not in get_args(CompileMode):
            raise ValueError(f"compile_mode {self.compile_mode!r} not in {get_args(CompileMode)}")
        if self.vae_tile_batch < 1:
            raise ValueError(f"vae_tile_batch {self.vae_tile_batch} must be >= 1")
        if self.vae_tile_px is not None and self.vae_tile_px < 8:
            raise ValueError(f"vae_tile_px {self.vae_tile_px} must be >= 8 (one latent pixel)")
        if self.vae_frame_chunk is not None and self.vae_frame_chunk < 1:
            raise ValueError(f"vae_frame_chunk {self.vae_frame_chunk} must be >= 1")
        if self.graph_fixed_shapes and self.attention_backend != "sdpa_mask":
            raise ValueError(
                f"graph_fixed_shapes needs attention_backend 'sdpa_mask' (padded keys are masked), "
                f"not {self.attention_backend!r}"
            )
        if self.graph_max_tokens is not None and self.graph_max_tokens < 1:
            raise ValueError(f"graph_max_tokens {self.graph_max_tokens} must be >= 1")
        if self.graph_context_bucket < 1:
            raise ValueError(f"graph_context_bucket {self.graph_context_bucket} must be >= 1")
        if self.cudnn_benchmark and self.cuda_graphs and self.overlap_decode:
            # seen on an H100: cuDNN's timing runs in the decode thread invalidated the sampler's capture
            raise ValueError(
                "cudnn_benchmark cannot be combined with cuda_graphs and overlap_decode: cuDNN times its "
                "algorithms while the sampler captures a graph; turn one of the three off"
            )

    def label(self) -> str:
        """Short name for benchmark tables, e.g. 'sdpa_split+compile+graphs'."""
        parts: list[str] = [self.attention_backend]
        parts += ["compile" if self.compile_mode == "default" else "compile-max"] if self.compile else []
        parts += ["graphs"] if self.cuda_graphs else []
        parts += ["lean"] if self.cuda_graphs and self.graph_lean_capture else []
        parts += [f"fixed{self.graph_context_bucket}"] if self.graph_fixed_shapes else []
        parts += [f"max{self.graph_max_tokens}"] if self.cuda_graphs and self.graph_max_tokens else []
        parts += [f"tiles{self.vae_tile_batch}"] if self.vae_tile_batch > 1 else []
        parts += [f"tile{self.vae_tile_px}px"] if self.vae_tile_px is not None else []
        parts += [f"chunk{self.vae_frame_chunk}"] if self.vae_frame_chunk is not None else []
        parts += ["overlap"] if self.overlap_decode else []
        parts += ["vae-cl"] if self.vae_channels_last else []
        parts += ["cudnn-bench"] if self.cudnn_benchmark else []
        return "+".join(parts)
