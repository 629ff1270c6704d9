#!/bin/bash
# Train the tiny preset's network in ONE GPU call (issue 5): latent set (built unless a matching one is there),
# network training for whatever time is left, export, held-out evaluation. Everything lands in $OUT (7 files:
# train.log, latents_meta.json, losses.jsonl, net.safetensors (fp32 EMA, to resume from), net_meta.json,
# tiny.safetensors (the shippable checkpoint), tiny_eval.json). Needs only torch, safetensors and numpy (SCAN=ref)
# or also mamba-ssm's Triton code (SCAN=triton: .train/mamba-triton-py.tgz, see below), no MiniLM (captions come
# from the text cache, built on a CPU box with `python -m model.train.run text` into the git-ignored .train/ and
# carried along). The fast step: SCAN=triton LAYOUT=all GRAPH=1 (docs/PERF.md):
#   run(command="bash bench/train_tiny_gpu.sh", carry=[".train"], timeout_s=600)
# Knobs (environment, defaults below): TOTAL_S is the whole script's wall time; TAIL_S is kept back for the net
# phase's start (loading the set), export and evaluation. NET_IN= (empty) trains from scratch instead of
# resuming from the shipped checkpoint. The frozen VAE is the shipped one, so the exported file keeps it, unless
# VAE_S > 0: then the VAE is first trained on (foreground-weighted loss) and the network starts anew (NET_IN=).
# The VAE's edge term weighs the shape and a VAE_EDGE_BAND-pixel band around it VAE_EDGE_FG extra (0: plain
# mean). VAE_ONLY=1 stops after the VAE: vae.safetensors, vae_meta.json, vae_eval.json (with the per-shape
# fill ratios of the round trip: triangles must read under 0.64) besides train.log and losses.jsonl.
# CPU smoke run (seconds of budget, a few clips and steps):
#   OUT=/tmp/tt CLIPS=4 LATENT_BATCH=4 NET_STEPS=2 NET_BATCH=2 EVAL_PROMPTS=2 EVAL_BATCH=2 \
#     LATENTS=/tmp/tt-lat/latents.safetensors bash bench/train_tiny_gpu.sh
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-$PWD/train-tiny-out}
TOTAL_S=${TOTAL_S:-540}
TAIL_S=${TAIL_S:-70}
LATENT_S=${LATENT_S:-150}                                  # cap on building the set (fewer clips if hit)
CLIPS=${CLIPS:-32768}                                      # ~55 clips per training spec, 2.6 GiB fp16
LATENT_BATCH=${LATENT_BATCH:-512}
LATENTS=${LATENTS:-/tmp/m4v-train/latents.safetensors}     # not under $OUT: too big to come back
TEXT_CACHE=${TEXT_CACHE:-.train/text_cache.safetensors}
VAE_IN=${VAE_IN:-model/weights/tiny.safetensors}
NET_IN=${NET_IN-model/weights/tiny.safetensors}
NET_STEPS=${NET_STEPS:-1000000}
NET_BATCH=${NET_BATCH:-512}
LR=${LR:-7e-4}
LR_WARMUP=${LR_WARMUP:-200}
SCAN=${SCAN:-ref}                                          # Mamba2 scan: ref, or triton (needs mamba-ssm)
LAYOUT=${LAYOUT:-random}                                   # unit layout; all, cycle = static shapes (graphs)
GRAPH=${GRAPH:-}                                           # non-empty: the whole step as one CUDA graph
COMPILE=${COMPILE:-}                                       # non-empty: torch.compile the blocks (dynamic)
SEED=${SEED:-0}
VAE_S=${VAE_S:-0}                                          # > 0: first train the VAE this long (resumes VAE_IN)
VAE_BATCH=${VAE_BATCH:-32}                                 # 8 clips took 10 GB in fp32 on a CPU
VAE_LR=${VAE_LR:-5e-4}
VAE_FG=${VAE_FG:-20}                                       # extra loss weight of shape pixels
VAE_EDGE=${VAE_EDGE:-0.5}                                  # weight of the edge term
VAE_EDGE_FG=${VAE_EDGE_FG:-20}                             # its extra weight on shape + band (0: plain mean)
VAE_EDGE_BAND=${VAE_EDGE_BAND:-2}                          # band: pixels around the shape weighed as shape
VAE_ONLY=${VAE_ONLY:-}                                     # non-empty: stop after the VAE (vae.safetensors, vae_eval.json)
EVAL_PROMPTS=${EVAL_PROMPTS:-240}
EVAL_BATCH=${EVAL_BATCH:-60}

mkdir -p "$OUT"
exec > >(tee -a "$OUT/train.log") 2>&1
# mamba-ssm's Python + Triton code only (no CUDA extension; made from the prebuilt set: the mamba_ssm folder,
# its dist-info and the selective_scan_cuda stand-in), for SCAN=triton: 0.6 MB instead of the 26 MB set.
if [ -f .train/mamba-triton-py.tgz ]; then
  mkdir -p /tmp/mamba-py && tar xzf .train/mamba-triton-py.tgz -C /tmp/mamba-py && export PYTHONPATH=/tmp/mamba-py:$PYTHONPATH
fi
[ -n "$VAE_ONLY" ] || [ -f "$TEXT_CACHE" ] || {  # the VAE alone needs no captions
  echo "no text cache at $TEXT_CACHE: build it on a CPU box (run text), carry .train"; exit 2; }
python3 -c "import platform, torch; print('python', platform.python_version(), 'torch', torch.__version__, \
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none (CPU run)')"
echo "knobs: TOTAL_S=$TOTAL_S TAIL_S=$TAIL_S CLIPS=$CLIPS NET_BATCH=$NET_BATCH LR=$LR LR_WARMUP=$LR_WARMUP" \
  "SCAN=$SCAN LAYOUT=$LAYOUT GRAPH=${GRAPH:-no} COMPILE=${COMPILE:-no} NET_IN=${NET_IN:-none} VAE_S=$VAE_S" \
  "VAE_FG=$VAE_FG VAE_EDGE=$VAE_EDGE VAE_EDGE_FG=$VAE_EDGE_FG VAE_EDGE_BAND=$VAE_EDGE_BAND"

if [ "$VAE_S" -gt 0 ]; then  # a new VAE: new latents, and a network trained for them from scratch
  [ -z "$NET_IN" ] || { echo "VAE_S > 0 changes the latent space: set NET_IN= (the network starts anew)"; exit 2; }
  rm -rf /tmp/m4v-vae
  python3 -m model.train.run vae --preset tiny --seed "$SEED" --out /tmp/m4v-vae --vae-in "$VAE_IN" \
    --vae-seconds "$VAE_S" --vae-steps 1000000 --vae-batch "$VAE_BATCH" --vae-lr "$VAE_LR" --vae-fg-weight "$VAE_FG" \
    --vae-edge-weight "$VAE_EDGE" --vae-edge-fg-weight "$VAE_EDGE_FG" --vae-edge-band "$VAE_EDGE_BAND"
  cat /tmp/m4v-vae/losses.jsonl >>"$OUT/losses.jsonl"
  VAE_IN=/tmp/m4v-vae/vae.safetensors
  echo "VAE trained after ${SECONDS}s"
  if [ -n "$VAE_ONLY" ]; then  # keep the VAE (fp32, to carry into the next call as VAE_IN) and its ceiling
    cp "$VAE_IN" /tmp/m4v-vae/vae_meta.json "$OUT/"
    python3 bench/tiny_eval.py --weights /tmp/m4v-vae/tiny.safetensors --ceiling-only --prompts "$EVAL_PROMPTS" \
      --batch "$EVAL_BATCH" --out "$OUT/vae_eval.json"
    echo "done after ${SECONDS}s"
    exit 0
  fi
fi
common=(--preset tiny --seed "$SEED" --out "$OUT" --vae-in "$VAE_IN" --latents "$LATENTS")
python3 -m model.train.run latents "${common[@]}" --latent-clips "$CLIPS" --latent-batch "$LATENT_BATCH" \
  --latent-seconds "$LATENT_S"
echo "latent set ready after ${SECONDS}s"

net_s=$((TOTAL_S - SECONDS - TAIL_S))
net_s=$((net_s > 1 ? net_s : 1))
resume=()
[ -n "$NET_IN" ] && resume=(--net-in "$NET_IN")
[ -n "$GRAPH" ] && resume+=(--cuda-graph)
[ -n "$COMPILE" ] && resume+=(--compile)
python3 -m model.train.run net "${common[@]}" "${resume[@]}" --text-cache "$TEXT_CACHE" \
  --net-seconds "$net_s" --net-steps "$NET_STEPS" --net-batch "$NET_BATCH" --lr "$LR" \
  --lr-warmup "$LR_WARMUP" --scan-backend "$SCAN" --unit-layout "$LAYOUT"
echo "network trained and exported after ${SECONDS}s (budget ${net_s}s)"

python3 bench/tiny_eval.py --weights "$OUT/tiny.safetensors" --text-cache "$TEXT_CACHE" \
  --prompts "$EVAL_PROMPTS" --batch "$EVAL_BATCH" --out "$OUT/tiny_eval.json"
echo "done after ${SECONDS}s"
