#!/usr/bin/env bash
# Flower's Deployment Engine on one machine: a SuperLink and two SuperNodes (insecure mode, a private
# FLWR_HOME, their own ports), a small federation submitted with `flwr run`, and checks on what it left:
# final.json and report.html, no secret in environment.json, and a SuperNode started without
# --node-config failing with a message that names --node-config. It stops exactly the processes it
# started (each in its own process group, by the PID it recorded).
#
#   FL_PRIVACY_DATA_DIR=/path/to/datasets tests/deploy/localhost.sh [WORKDIR]
#
# Needs mnist-subset.npz (or torchvision's MNIST) in $FL_PRIVACY_DATA_DIR. Ports: $FL_PRIVACY_DEPLOY_PORT
# (SuperLink, default 48200) and the next three (SuperNodes).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/fl-privacy-deploy.XXXXXX")}
port=${FL_PRIVACY_DEPLOY_PORT:-48200}
mkdir -p "$work"
work=$(cd "$work" && pwd)
: "${FL_PRIVACY_DATA_DIR:?set FL_PRIVACY_DATA_DIR to the folder with mnist-subset.npz}"

# What every machine needs (here all are this one): the data (the SuperLink's ServerApp rebuilds the
# victims' ground truth from it), the decoded-array cache, where runs land, quiet logs, this environment.
export FLWR_HOME="$work/flwr-home"
export FL_PRIVACY_CACHE="${FL_PRIVACY_CACHE:-$work/cache}"
export FL_PRIVACY_RUNS_DIR="$work/runs"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "localhost-deploy"

[superlink.localhost-deploy]
address = "127.0.0.1:$port"
insecure = true
TOML

pids=()
start() {  # start NAME CMD...: in its own process group, log in $work/NAME.log, PID recorded
  local name=$1; shift
  setsid "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/$name.pid"
}
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
wait_for() {  # wait_for FILE TEXT SECONDS
  for _ in $(seq $(( $3 * 5 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; return 1
}

start superlink flower-superlink --insecure --port "$port" --disable-runtime-dependency-installation
wait_for "$work/superlink.log" "Uvicorn running" 120
for i in 0 1; do
  start "supernode$i" flower-supernode --insecure --superlink "127.0.0.1:$port" --port $(( port + 1 + i )) \
    --node-config "partition-id=$i num-partitions=2"
  wait_for "$work/supernode$i.log" "SuperNode ID" 120
done

settings="data.dataset='mnist' data.partition='iid' data.samples_per_client=40
federation.rounds=2 model.name='lenet' training.algorithm='fedsgd' training.batch_size=2 training.model_mode='eval'
evaluation.test_samples=200 attack.name='inverting_gradients' attack.gia.iterations=20 attack.progress=false
resources.threads=1 name='deploy-localhost'"
cd "$repo"
started=$(date +%s)
flwr run . localhost-deploy --stream --run-config "$(echo $settings) federation.num_clients=2" \
  >"$work/flwr-run.log" 2>&1
echo "flwr run (2 SuperNodes, 2 rounds): $(( $(date +%s) - started )) s wall"
final=$(find "$FL_PRIVACY_RUNS_DIR" -name final.json | head -n 1)
if [ -z "$final" ]; then
  echo "FAIL: no final.json under $FL_PRIVACY_RUNS_DIR; flwr run said:" >&2; tail -30 "$work/flwr-run.log" >&2; exit 1
fi
run_dir=$(dirname "$final")
python - "$run_dir" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
argv = json.loads((run / "environment.json").read_text())["argv"]
assert "--token" not in argv or argv[argv.index("--token") + 1] == "<redacted>", argv
rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
assert [r["round"] for r in rounds] == [0, 1, 2] and rounds[-1]["clients"] == 2, rounds
assert (run / "report.html").is_file() and rounds[1]["victims"][0]["psnr_mean"] > 0
print(f"ok: {run}: rounds 0-2, 2 clients, accuracy {rounds[-1]['test_accuracy']:.3f}, "
      f"report.html, ServerApp command line stored as {' '.join(argv)}")
PY

# A third SuperNode without --node-config: the run must fail with a message that names the fix.
start supernode-unconfigured flower-supernode --insecure --superlink "127.0.0.1:$port" --port $(( port + 3 ))
wait_for "$work/supernode-unconfigured.log" "SuperNode ID" 120
flwr run . localhost-deploy --stream --run-config "$(echo $settings) federation.num_clients=3" \
  >"$work/flwr-run-unconfigured.log" 2>&1 || true
if grep -q -- "--node-config" "$work/flwr-run-unconfigured.log" && grep -q "RUN FAILED" "$work/flwr-run-unconfigured.log"; then
  echo "ok: a SuperNode without --node-config fails the run with: $(grep -m1 -o 'has no partition-id[^;]*' "$work/flwr-run-unconfigured.log")"
else
  echo "FAIL: no clear --node-config error; flwr run said:" >&2; tail -30 "$work/flwr-run-unconfigured.log" >&2; exit 1
fi
echo "deployment on localhost: passed (logs in $work)"
