"""PyramidFlow-miniFLUX -> our layout: a scaled-down DiT under PyramidFlow's exact key names converts
strictly, and our network on the converted weights computes what PyramidFlow's DiT computes
(tests/model/pyramid_flow_reference.py, written against PyramidFlow's layout)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.config import ModelConfig, get_preset
from model.network import M4VNetwork
from model.pyramid_flow.convert import (
    VAE_NOT_CONVERTED,
    IncompleteConversionError,
    convert_tensors,
)
from model.pyramid_flow.dit_mapping import MMDIM_NEW, SINGLE_DROPPED
from model.pyramid_flow.layout import DIT_DIR, VAE_DIR
from model.pyramid_flow.vae_mapping import ENCODER_DROPPED
from model.text_encoder import TextEmbeddings
from model.vae import CausalVAE
from model.vae_blocks import CausalCache
from tests.model.pyramid_flow_reference import pf_dit_config, pf_dit_state_dict, pf_forward
from tests.model.pyramid_flow_vae_reference import pf_vae_config, pf_vae_decode, pf_vae_state_dict
from tests.small_presets import small_768p


def small_cfg(single_block: str = "attention") -> ModelConfig:
    return small_768p(single_block)


def write_pf_folder(root: Path, cfg: ModelConfig, seed: int = 0, drop: str | None = None) -> dict:
    """PyramidFlow's layout: the DiT folder (config.json + safetensors) and a causal_video_vae folder."""
    net = cfg.network
    c = pf_dit_config(
        layers=net.num_dual_blocks,
        single_layers=net.num_single_blocks,
        heads=net.heads,
        head_dim=net.head_dim,
        text_dim=cfg.text.token_dim,
        pooled_dim=cfg.text.pooled_dim,
        latent_ch=cfg.vae.latent_channels,
    )
    c["axes_dims_rope"] = list(net.rope_axes)
    sd = pf_dit_state_dict(c, seed=seed)
    if drop is not None:
        del sd[drop]
    (root / DIT_DIR).mkdir(parents=True)
    (root / DIT_DIR / "config.json").write_text(json.dumps(c))
    save_file(sd, str(root / DIT_DIR / "diffusion_pytorch_model.safetensors"))
    v = cfg.vae
    vc = pf_vae_config(
        v.latent_channels,
        list(reversed(v.decoder_channels)),
        v.decoder_layers,
        v.norm_groups,
        list(v.spatial_down),
        list(v.temporal_down),
    )
    vsd = pf_vae_state_dict(vc, seed=seed + 1)
    (root / VAE_DIR).mkdir()
    (root / VAE_DIR / "config.json").write_text(json.dumps(vc))
    save_file(vsd, str(root / VAE_DIR / "diffusion_pytorch_model.safetensors"))
    return {"config": c, "state": sd, "vae_config": vc, "vae_state": vsd}


def targets(cfg: ModelConfig) -> dict[str, torch.Size]:
    net = M4VNetwork.for_preset(cfg, device="meta")
    vae = CausalVAE(cfg.vae, device="meta")
    return {
        **{f"network.{k}": t.shape for k, t in net.state_dict().items()},
        **{f"vae.{k}": t.shape for k, t in vae.state_dict().items()},
    }


def converted_network(cfg: ModelConfig, root: Path) -> M4VNetwork:
    tensors, _ = convert_tensors(root, cfg, targets(cfg))
    net = M4VNetwork.for_preset(cfg)
    state = {k[len("network.") :]: v for k, v in tensors.items() if k.startswith("network.")}
    net.load_state_dict(state, strict=True)
    return net.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def pf_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelConfig, Path, dict]:
    cfg = small_cfg()
    root = tmp_path_factory.mktemp("pf")
    return cfg, root, write_pf_folder(root, cfg)


def _text(b: int, cfg: ModelConfig, gen: torch.Generator) -> TextEmbeddings:
    lt = cfg.text.max_tokens
    mask = torch.arange(lt)[None, :] < torch.tensor([5, 2][:b])[:, None]  # different padding per row
    tokens = torch.randn(b, lt, cfg.text.token_dim, generator=gen)
    return TextEmbeddings(tokens=tokens, mask=mask, pooled=torch.randn(b, cfg.text.pooled_dim, generator=gen))


@pytest.mark.parametrize(
    ("history_grids", "cur_grid", "pf_clips"),
    [
        ([], 4, [[0]]),  # unit 0, lowest stage
        ([4, 8], 8, [[0], [1], [2]]),  # unit 2, middle stage: frame 0 one level lower
        ([4, 4, 4], 4, [[0, 1, 2], [3]]),  # unit 3, lowest stage: PyramidFlow packs old frames in one clip
        ([4, 8, 16], 16, [[0], [1], [2], [3]]),  # full resolution
    ],
)
def test_converted_network_equals_pyramidflow_reference_forward(
    pf_small: tuple[ModelConfig, Path, dict],
    history_grids: list[int],
    cur_grid: int,
    pf_clips: list[list[int]],
) -> None:
    cfg, root, pf = pf_small
    net = converted_network(cfg, root)
    gen = torch.Generator().manual_seed(len(history_grids))
    ch, b = cfg.vae.latent_channels, 2
    frames = [torch.randn(b, ch, g, g, generator=gen) for g in [*history_grids, cur_grid]]
    text = _text(b, cfg, gen)
    t = torch.tensor([731.5, 402.25])
    with torch.no_grad():
        ours = net(frames[-1], t, text=text, history=frames[:-1], full_hw=(16, 16))
        clips = [torch.stack([frames[i] for i in idx], dim=2) for idx in pf_clips]
        ref = pf_forward(pf["state"], pf["config"], clips, text.tokens, text.mask, text.pooled, t)[:, :, 0]
    assert ours.shape == ref.shape == frames[-1].shape
    assert rel_err(ours, ref) <= 1e-5, rel_err(ours, ref)


def test_the_reference_comparison_can_fail(pf_small: tuple[ModelConfig, Path, dict]) -> None:
    """The same check with the final adaLN halves left unswapped (a plausible conversion bug) fails."""
    cfg, root, pf = pf_small
    net = converted_network(cfg, root)
    w = net.final_layer.adaLN_modulation.weight.data
    net.final_layer.adaLN_modulation.weight.data = torch.cat(w.chunk(2)[::-1])
    gen = torch.Generator().manual_seed(0)
    x, text, t = torch.randn(2, 8, 4, 4, generator=gen), _text(2, cfg, gen), torch.tensor([500.0, 500.0])
    with torch.no_grad():
        ours = net(x, t, text=text, history=[], full_hw=(16, 16))
        ref = pf_forward(pf["state"], pf["config"], [x[:, :, None]], text.tokens, text.mask, text.pooled, t)
    assert rel_err(ours, ref[:, :, 0]) > 1e-3


def test_report_accounts_for_every_tensor_attn(pf_small: tuple[ModelConfig, Path, dict]) -> None:
    cfg, root, pf = pf_small
    tgt = targets(cfg)
    _, report = convert_tensors(root, cfg, tgt)
    assert {k for k in report.filled if k.startswith("network.")} == {
        k for k in tgt if k.startswith("network.")
    }
    used = [s for k, srcs in report.filled.items() if k.startswith("network.") for s in srcs]
    assert sorted(used) == sorted(f"{DIT_DIR}/{k}" for k in pf["state"])  # each exactly once
    assert set(report.filled) >= {k for k in tgt if k.startswith("vae.")}
    assert report.new_init == {}
    vae_used = sorted(s for k, srcs in report.filled.items() if k.startswith("vae.") for s in srcs)
    encoder_side = {k for k in pf["vae_state"] if k.startswith(("encoder.", "quant_conv."))}
    assert vae_used == sorted(f"{VAE_DIR}/{k}" for k in pf["vae_state"] if k not in encoder_side)
    assert report.dropped == {f"{VAE_DIR}/{k}": ENCODER_DROPPED for k in encoder_side}
    post = report.filled["vae.decoder.post_quant_conv.conv.weight"]
    assert post == [f"{VAE_DIR}/post_quant_conv.conv.weight"]
    assert report.filled["network.double_blocks.0.vid.qkv.weight"] == [
        f"{DIT_DIR}/transformer_blocks.0.attn.{n}.weight" for n in ("to_q", "to_k", "to_v")
    ]
    assert report.filled["network.single_blocks.1.linear1.bias"] == [
        f"{DIT_DIR}/single_transformer_blocks.1.attn.to_q.bias",
        f"{DIT_DIR}/single_transformer_blocks.1.attn.to_k.bias",
        f"{DIT_DIR}/single_transformer_blocks.1.attn.to_v.bias",
        f"{DIT_DIR}/single_transformer_blocks.1.proj_mlp.bias",
    ]


def test_report_for_m4v_lists_mmdim_blocks_as_new_and_attention_singles_as_dropped(tmp_path: Path) -> None:
    cfg = small_cfg("mmdim")
    pf = write_pf_folder(tmp_path, cfg)
    tgt = targets(cfg)
    _, report = convert_tensors(tmp_path, cfg, tgt)
    singles = {f"{DIT_DIR}/{k}" for k in pf["state"] if k.startswith("single_transformer_blocks.")}
    assert {k for k, why in report.dropped.items() if why == SINGLE_DROPPED} == singles
    new_mmdim = {k for k, why in report.new_init.items() if why == MMDIM_NEW}
    assert new_mmdim == {k for k in tgt if k.startswith("network.single_blocks.")}
    assert any(k.endswith(".registers") for k in new_mmdim) and any(".temporal." in k for k in new_mmdim)
    assert any(".mixer." in k for k in new_mmdim)
    assert set(report.filled) == set(tgt) - new_mmdim


def test_missing_source_tensor_is_named(tmp_path: Path) -> None:
    cfg = small_cfg()
    write_pf_folder(tmp_path, cfg, drop="transformer_blocks.1.attn.norm_added_k.weight")
    with pytest.raises(ValueError, match=r"transformer_blocks\.1\.attn\.norm_added_k\.weight"):
        convert_tensors(tmp_path, cfg, targets(cfg))


def test_unknown_source_tensor_is_neither_used_nor_dropped(tmp_path: Path) -> None:
    cfg = small_cfg()
    pf = write_pf_folder(tmp_path, cfg)
    save_file(
        {**pf["state"], "transformer_blocks.0.attn.extra.weight": torch.zeros(1)},
        str(tmp_path / DIT_DIR / "diffusion_pytorch_model.safetensors"),
    )
    with pytest.raises(ValueError, match=r"neither used nor dropped.*attn\.extra\.weight"):
        convert_tensors(tmp_path, cfg, targets(cfg))


def test_config_mismatch_names_the_field(tmp_path: Path) -> None:
    cfg = small_cfg()
    write_pf_folder(tmp_path, cfg)
    bigger = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, num_dual_blocks=3))
    with pytest.raises(ValueError, match="num_layers is 2, preset 'small-attn-768p' needs 3"):
        convert_tensors(tmp_path, bigger, targets(bigger))


def test_in_memory_conversion_loads_network_and_vae(
    pf_small: tuple[ModelConfig, Path, dict], caplog: pytest.LogCaptureFixture
) -> None:
    from model.pipeline import VideoPipeline

    cfg, root, _ = pf_small
    with caplog.at_level("INFO"):
        pipe = VideoPipeline.from_preset(cfg, weights=str(root), stand_in_text=True)
    assert any(
        "unconverted PyramidFlow folder: converting in memory" in r.getMessage() for r in caplog.records
    )
    assert pipe.weights_source == str(root)
    tensors, _ = convert_tensors(root, cfg, targets(cfg))
    for name, module in (("network", pipe.network), ("vae", pipe.vae)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, tensors[f"{name}.{key}"]), key


def test_a_preset_whose_vae_the_folder_cannot_fill_needs_the_opt_in(
    pf_small: tuple[ModelConfig, Path, dict],
) -> None:
    from model.pipeline import VideoPipeline

    cfg, root, _ = pf_small
    other = dataclasses.replace(cfg, vae=get_preset("tiny").vae)  # model/vae.py's VAE: nothing to fill it
    with pytest.raises(IncompleteConversionError, match="vae"):
        VideoPipeline.from_preset(other, weights=str(root), stand_in_text=True)
    pipe = VideoPipeline.from_preset(other, weights=str(root), stand_in_text=True, allow_random_weights=True)
    assert pipe.weights_source == f"{root} (RANDOM vae)"
    _, report = convert_tensors(root, other, targets(other))
    assert set(report.new_init) == {k for k in targets(other) if k.startswith("vae.")}
    assert set(report.dropped.values()) == {VAE_NOT_CONVERTED}


def test_converted_vae_decode_equals_pyramidflow_reference(pf_small: tuple[ModelConfig, Path, dict]) -> None:
    cfg, root, pf = pf_small
    tensors, _ = convert_tensors(root, cfg, targets(cfg))
    vae = CausalVAE(cfg.vae)
    vae.load_state_dict(
        {k[len("vae.") :]: v for k, v in tensors.items() if k.startswith("vae.")}, strict=True
    )
    vae.eval()
    z = torch.randn(1, cfg.vae.latent_channels, 3, 6, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = pf_vae_decode(pf["vae_state"], pf["vae_config"], z)
        whole = vae.decoder(z)
        cache = CausalCache()  # our streaming path: one latent frame at a time
        streamed = torch.cat([vae.decoder(z[:, :, t : t + 1], cache) for t in range(3)], dim=2)
        # the check can fail: with the first latent frame repeated before the clip (replicate padding, as
        # model/vae.py pads), the video differs
        other = pf_vae_decode(pf["vae_state"], pf["vae_config"], torch.cat([z[:, :, :1], z], dim=2))[:, :, 4:]
    assert whole.shape == ref.shape == (1, 3, 9, 24, 20)
    assert rel_err(whole, ref) <= 1e-5, rel_err(whole, ref)
    assert rel_err(streamed, ref) <= 1e-5, rel_err(streamed, ref)
    assert rel_err(other, ref) > 1e-3


def test_cli_writes_a_checkpoint_with_its_report_that_loads_strictly(
    pf_small: tuple[ModelConfig, Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from m4v_cli.main import app
    from model.config import PRESETS
    from model.pipeline import VideoPipeline
    from tests.tiny_text_models import save_diffusers_layout

    cfg, shared, _ = pf_small
    root = tmp_path / "pf"
    shutil.copytree(shared, root)
    save_diffusers_layout(root)
    monkeypatch.setitem(PRESETS, cfg.name, cfg)
    monkeypatch.setattr("m4v_cli.convert.SERVABLE", (cfg.name,))
    dst = tmp_path / "converted"
    runner = CliRunner()
    bad = runner.invoke(app, ["convert", "pyramid-flow", str(root), str(dst), "--preset", "tiny"])
    assert bad.exit_code != 0 and "--preset" in bad.output and not dst.exists()
    ok = runner.invoke(app, ["convert", "pyramid-flow", str(root), str(dst), "--preset", cfg.name])
    assert ok.exit_code == 0, ok.output
    assert "parameters filled" in ok.output and "dropped" in ok.output
    saved = json.loads((dst / "conversion_report.json").read_text())
    _, report = convert_tensors(root, cfg, targets(cfg))
    assert saved == json.loads(json.dumps(report.as_dict()))
    assert {p.name for p in dst.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "text_encoder",
        "tokenizer_2",
    }
    pipe = VideoPipeline.from_preset(cfg.name, weights=str(dst))
    assert pipe.weights_source == str(dst)
    assert type(pipe.text_encoder).__name__ == "T5ClipEncoder"  # through the linked text folders
    tensors, _ = convert_tensors(root, cfg, targets(cfg))
    for name, module in (("network", pipe.network), ("vae", pipe.vae)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, tensors[f"{name}.{key}"]), key


def test_legacy_attention_names_and_a_second_dtype_variant_are_read(
    pf_small: tuple[ModelConfig, Path, dict], tmp_path: Path
) -> None:
    """diffusers may store the VAE attention as query/key/value/proj_attn, and a folder may hold the same
    weights as <name>.bf16.safetensors beside the plain file: the plain file is read, legacy names map."""
    cfg, shared, pf = pf_small
    root = tmp_path / "pf"
    shutil.copytree(shared, root)
    legacy = {}
    for k, v in pf["vae_state"].items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[k] = v
    save_file(legacy, str(root / VAE_DIR / "diffusion_pytorch_model.safetensors"))
    save_file(
        {k: v.to(torch.bfloat16) for k, v in pf["state"].items()},
        str(root / DIT_DIR / "diffusion_pytorch_model.bf16.safetensors"),
    )
    tensors, report = convert_tensors(root, cfg, targets(cfg))
    q = "vae.decoder.mid_block.attentions.0.to_q.weight"
    assert report.filled[q] == [f"{VAE_DIR}/decoder.mid_block.attentions.0.query.weight"]
    assert torch.equal(tensors[q], pf["vae_state"]["decoder.mid_block.attentions.0.to_q.weight"])
    assert tensors["network.txt_in.weight"].dtype == torch.float32  # the plain (fp32) file, not bf16
