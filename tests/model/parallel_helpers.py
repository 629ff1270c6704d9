"""Shared by the parallel tests (tests only): a small Mamba2, the tiny VAE, the relative error, and the rank
entry points of the multi-process tests. Each rank function runs in its own spawned process, joined to a gloo
group by model.parallel.group.run_ranks, and saves what the parent compares into `out` (a directory)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from model.config import MambaConfig, get_preset
from model.mamba2 import Mamba2
from model.parallel.cfg import CfgParallelDenoiser
from model.parallel.mesh import cfg_seq_denoiser
from model.parallel.relay import ProcessRelay, Step
from model.parallel.scan_split import mixer_forward_shard
from model.parallel.seq import SeqAttention, SeqParallelDenoiser
from model.parallel.vae_tiles import ParallelStreamingDecoder
from model.pipeline import VideoPipeline, find_packaged_weights
from model.pipeline_types import GenerationRequest
from model.runtime import RuntimeOptions
from model.sampler import sample_video
from model.vae import CausalVAE, StreamingDecoder
from model.vae_stream import BatchedStreamingDecoder

SMALL = MambaConfig(d_state=16, d_conv=4, expand=2, headdim=16, ngroups=2, chunk_size=32)
D_MODEL = 32
SEQ = 128


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: the issue's fp32 bound is 1e-5."""
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def mixer(seed: int = 0) -> Mamba2:
    torch.manual_seed(seed)
    m = Mamba2(D_MODEL, SMALL)
    with torch.no_grad():  # init leaves D = 1 and small dt: perturb so the skip and decay are exercised
        m.D.uniform_(0.5, 1.5)
        m.dt_bias.uniform_(-1.0, 1.0)
        m.norm.weight.uniform_(0.5, 1.5)
    return m


def scan_rank(rank: int, world: int, m: Mamba2, x: torch.Tensor, lengths: list[int], out: Path) -> None:
    """This rank's slice of the split scan, the state passed with send/recv; saves y and the end state."""
    torch.set_num_threads(1)
    seg = x.split(lengths, dim=1)[rank]
    relay = ProcessRelay()
    with torch.no_grad():
        y, end = mixer_forward_shard(m, seg, relay, None)
        ssm = relay.from_last(end.ssm)
    torch.save({"y": y, "ssm": ssm}, out / f"rank{rank}.pt")


# ---- the tiny pipeline, in one process or on each rank -------------------------------------------------

TINY_REQUEST = GenerationRequest(
    prompt="a red fox in snow",
    width=128,
    height=128,
    num_frames=5,  # 2 latent frames: the second has history, so a context cache
    seed=7,
    first_frame_steps=(2, 1, 1),
    later_frame_steps=(1, 1, 1),
)


def tiny_pipe(device: str = "cpu", runtime: RuntimeOptions | None = None) -> VideoPipeline:
    torch.manual_seed(0)  # the same network on every rank (random parts, if any, too)
    torch.set_num_threads(1)
    return VideoPipeline.from_preset("tiny", device=device, runtime=runtime)


def counted_tiny_pipe(out: Path, runtime: RuntimeOptions, device: str = "cpu") -> VideoPipeline:
    """tiny_pipe in a process group whose VAE decoder appends the tile rows of each call to
    out/rank{rank}.rows (a forward hook; it runs before the decoder's all_gather)."""
    pipe = tiny_pipe(device, runtime)
    path = out / f"rank{dist.get_rank()}.rows"

    def count(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        with path.open("a") as f:
            f.write(f"{args[0].shape[0]}\n")

    pipe.vae.decoder.register_forward_hook(count)
    return pipe


def rows_decoded(out: Path, rank: int) -> int:
    """The tile rows rank's VAE decoder has run so far (counted_tiny_pipe)."""
    path = out / f"rank{rank}.rows"
    return sum(map(int, path.read_text().split())) if path.exists() else 0


def tiny_latents(pipe: VideoPipeline, use_cache: bool) -> torch.Tensor:
    """Clean float latents (1, C, 2, h, w) of TINY_REQUEST through pipe.denoiser."""
    req, sp = TINY_REQUEST, pipe.cfg.sampler
    with torch.inference_mode():
        text = pipe.text_encoder.encode([req.prompt + sp.prompt_suffix, sp.negative_prompt])
        return sample_video(
            pipe.denoiser,
            text,
            pipe.cfg,
            num_latent_frames=pipe.cfg.latent_frames(req.num_frames),
            full_hw=pipe.cfg.latent_grid(req.width, req.height),
            steps_first=req.first_frame_steps or sp.first_frame_steps,
            steps_later=req.later_frame_steps or sp.later_frame_steps,
            guidance_first=req.guidance_scale,
            guidance_later=req.video_guidance_scale,
            generator=torch.Generator().manual_seed(req.seed),
            device="cpu",
            dtype=torch.float32,
            use_cache=use_cache,
        )


def tiny_outputs(pipe: VideoPipeline) -> dict[str, torch.Tensor]:
    """Latents cached and uncached, and the decoded uint8 frames of pipe.generate (cached)."""
    frames = torch.from_numpy(pipe.generate(TINY_REQUEST).frames)
    return {"cached": tiny_latents(pipe, True), "uncached": tiny_latents(pipe, False), "frames": frames}


class SwappedCfg(CfgParallelDenoiser):
    """A wrong exchange: the gathered halves in the wrong order (guidance pushes away from the prompt)."""

    def gather(self, v: torch.Tensor) -> list[torch.Tensor]:
        return super().gather(v)[::-1]


def cfg_rank(rank: int, world: int, out: Path, swapped: bool = False) -> None:
    """The tiny pipeline with CFG-parallel on this rank; saves tiny_outputs (only the cached latents when
    swapped)."""
    torch.set_num_threads(1)
    pipe = tiny_pipe()
    if swapped:
        pipe.denoiser = SwappedCfg(pipe.network)
        torch.save({"cached": tiny_latents(pipe, True)}, out / f"rank{rank}.pt")
        return
    pipe.parallel_cfg()
    torch.save(tiny_outputs(pipe), out / f"rank{rank}.pt")


class StartOverRelay(ProcessRelay):
    """A wrong hand-off: the messages still flow, but every rank scans from the caller's state."""

    def relay(self, start: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        super().relay(start, step)
        return start, step(start)


def seq_rank(
    rank: int, world: int, out: Path, attention: SeqAttention = "gather_kv", start_over: bool = False
) -> None:
    """The tiny pipeline with the cached step sequence-parallel over `world` ranks; saves the cached
    latents."""
    pipe = tiny_pipe()
    denoiser = SeqParallelDenoiser(pipe.network, attention=attention)
    if start_over:
        denoiser.relay = StartOverRelay()
    pipe.denoiser = denoiser
    torch.save({"cached": tiny_latents(pipe, True)}, out / f"rank{rank}.pt")


def mesh_rank(rank: int, world: int, out: Path, attention: SeqAttention = "gather_kv") -> None:
    """The tiny pipeline on a 2 x (world / 2) CFG x sequence mesh; saves cached and uncached latents."""
    pipe = tiny_pipe()
    pipe.denoiser = cfg_seq_denoiser(pipe.network, world // 2, attention)
    result = {"cached": tiny_latents(pipe, True), "uncached": tiny_latents(pipe, False)}
    torch.save(result, out / f"rank{rank}.pt")


# ---- the tiny VAE, decoded in one process or with its tiles over the ranks -------------------------------


def tiny_vae() -> CausalVAE:
    """The tiny preset's VAE with its packaged (trained) weights."""
    vae = CausalVAE(get_preset("tiny").vae).eval()
    weights = find_packaged_weights("tiny")
    assert weights is not None
    vae.load_state_dict({k[4:]: v for k, v in load_file(str(weights)).items() if k.startswith("vae.")})
    return vae


def stream(
    decoder: StreamingDecoder | BatchedStreamingDecoder | ParallelStreamingDecoder, latents: torch.Tensor
) -> torch.Tensor:
    """Every latent frame through decoder.decode_next, the frames joined: (B, 3, F, H, W)."""
    frames = [decoder.decode_next(latents[:, :, t : t + 1]) for t in range(latents.shape[2])]
    return torch.cat(frames, dim=2)


class SwappedTiles(ParallelStreamingDecoder):
    """A wrong gather: the first two tiles of the frame trade places."""

    def gather(self, mine: list[torch.Tensor], blank: torch.Tensor, count: int) -> list[torch.Tensor]:
        got = super().gather(mine, blank, count)
        got[0], got[1] = got[1], got[0]
        return got


VaeCase = tuple[str, torch.Tensor, int | None, int]  # name, latents, tile_px, tile_batch


def vae_rank(rank: int, world: int, cases: list[VaeCase], out: Path, swapped: bool = False) -> None:
    """Each case's latents through the parallel decoder on a process group of its own (as beside an
    overlapped sampler); saves per case the frames and the tile rows this rank's VAE decoder ran (a
    forward hook counts them: tiles x latent frames at batch 1)."""
    torch.set_num_threads(1)
    vae, group = tiny_vae(), dist.new_group(list(range(world)))
    rows: list[int] = []
    vae.decoder.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    result = {}
    for name, latents, tile_px, tile_batch in cases:
        rows.clear()
        decoder = (SwappedTiles if swapped else ParallelStreamingDecoder)(vae, group, tile_px, tile_batch)
        result[name] = {"frames": stream(decoder, latents), "rows": sum(rows)}
    torch.save(result, out / f"rank{rank}.pt")
