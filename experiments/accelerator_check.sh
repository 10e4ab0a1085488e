#!/usr/bin/env bash
# The checks that need an accelerator, in one script for one GPU with no network, within
# 8 minutes; the last line of stdout is one JSON object with every figure.
#
#   experiments/accelerator_check.sh            # on the GPU machine, from the repository root
#   SMOKE=1 experiments/accelerator_check.sh    # the same steps, tiny, on any machine
#
# 1. loop:    vaelab's whole loop against a bare jitted loop (benchmark_loop.py, small and
#             large AE), steps/s and images/s;
# 2. step:    the runlocal beta-VAE trunk's step against a hand-written one, and its FLOP
#             rate against the device's measured matmul peak (benchmark_step.py);
# 3. default: `make run`'s job (configs/default.py), its wall time and train/eval split;
# 4. study:   the disentanglement study's full protocol (disentanglement_lib's conv trunk,
#             beta x seed members on procedural dSprites) as populations, per member-step,
#             against a bare jitted step of the trunk, and the study's evaluations
#             (benchmark_study.py), with the time 300k steps of the nine would take.
#
# The GPU image has jax with CUDA, flax, optax, orbax, chex, scikit-learn and matplotlib;
# what else vaelab reads travels as wheels in experiments/wheels (git-ignored; made where
# there is a network with `pip download ml_collections tensorboardX --no-deps -d
# experiments/wheels`) and is installed from there without the network.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d experiments/wheels ]; then
  $PY -m pip install -q --no-index --find-links experiments/wheels ml_collections tensorboardX \
      >"$OUT/pip.log" 2>&1 || echo "pip from wheels failed, see $OUT/pip.log" >&2
fi
if [ "${SMOKE:-0}" = 1 ]; then
  LOOP="--steps 200 --models small --repeats 1"; STEP="--steps 5 --rounds 1 --matmul_n 512"
  DEFAULT="--config=configs/default.py:runlocal --config.num_train_steps=20"
  STUDY="--steps 40 --rounds 1 --seeds 0 --betas 1,4 --num_train 200 --arch mlp"
else
  LOOP="--steps 3000 --models small,large --repeats 2"; STEP="--steps 50 --rounds 3"
  DEFAULT="--config=configs/default.py"
  STUDY="--steps 300 --rounds 1 --seeds 0,1,2 --betas 1,4,16 --arch dlib_conv --study_steps 300000 --curve_every 30000"
fi
last_json() { grep '^{' "$1" | tail -1; }
run() {  # name, timeout in s, command...: the command's stdout in $OUT/name.out
  local name=$1 limit=$2; shift 2
  local t=$(date +%s.%N)
  timeout "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  local rc=$?
  echo "$name: rc $rc in $(echo "$(date +%s.%N) - $t" | bc) s" >&2
  echo "$rc" >"$OUT/$name.rc"
}
run loop 120 $PY experiments/benchmark_loop.py $LOOP
run step 60 $PY experiments/benchmark_step.py --side 64 --hidden 512,256 --latent 10 --batch_size 64 $STEP
t=$(date +%s.%N)
run default 150 $PY -m vaelab.main $DEFAULT --workdir="$OUT/default"
echo "$(echo "$(date +%s.%N) - $t" | bc)" >"$OUT/default.wall"
run study 170 $PY experiments/benchmark_study.py $STUDY
$PY - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def last(name):
  try:
    lines = [l for l in open(os.path.join(out, name + ".out")) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {"rc": open(os.path.join(out, name + ".rc")).read().strip()}
  except OSError as e:
    return {"error": str(e)}
figures = {"loop": last("loop"), "step": last("step"), "study": last("study")}
try:
  import jax
  figures["device"] = str(jax.devices()[0].device_kind)
except Exception as e:  # the figures matter more than the name
  figures["device"] = repr(e)
default = {"wall_s": float(open(os.path.join(out, "default.wall")).read())}
metrics = os.path.join(out, "default", "metrics.jsonl")
if os.path.exists(metrics):
  timing = [json.loads(l) for l in open(metrics) if "time/train_s" in l]
  if timing:
    default.update({k: timing[-1][k] for k in ("time/train_s", "time/eval_s")})
results = os.path.join(out, "default", "results.json")
if os.path.exists(results):
  r = json.load(open(results))
  default.update({k: r.get(k) for k in ("eval/elbo", "eval/mig", "eval/factorvae_score")})
figures["default"] = default
study = figures["study"]
if "loop_ms_per_member_step" in study:
  best = min(study["loop_ms_per_member_step"], study["vmap_ms_per_member_step"])
  figures["study_300k_steps_hours"] = best * study["members"] * 300000 / 3.6e6
print(json.dumps(figures))
EOF
