#!/usr/bin/env bash
# RQ1 with three attackers on one CIFAR-10 test image (index $2, default 0) after E local steps:
# GIA-O with the schedule unknown (naive: -delta as one gradient), GIA-O with the schedule known
# (unrolled), and dimitrov_fedavg (schedule unknown). The quick settings of
# experiments/rq1_local_updates.yaml (ConvNet width 16 in eval mode, batch 1, lr 0.1, 300 iterations,
# labels known) as one-shot attacks, so that only the needed cells run.
#   benchmarks/rq1_three_attackers.sh OUT [INDEX] [E ...]     then: python benchmarks/rq1_table.py OUT
# MODEL (default convnet) and WIDTH (default 16) choose the network; MODEL=fedavg_cnn WIDTH=64 is
# Dimitrov et al.'s own CIFAR network, the one their attack's default prior weights were set for.
set -euo pipefail
out=${1:?usage: rq1_three_attackers.sh OUT [INDEX] [E ...]}; index=${2:-0}; shift $(( $# >= 2 ? 2 : 1 ))
steps=${*:-1 2 4 8}
common=(--set data.dataset=cifar10 --set model.name="${MODEL:-convnet}" --set model.width="${WIDTH:-16}" --set training.algorithm=fedavg
        --set training.batch_size=1 --set training.local_epochs=8 --set training.lr=0.1 --set training.model_mode=eval
        --set attack.threat.labels=true --set attack.gia.iterations=300 --set attack.progress=false
        --set resources.device=cpu --set resources.threads=1 --split test --indices "$index")
for e in $steps; do
  for cell in "naive:inverting_gradients:false" "known:inverting_gradients:true" "dimitrov:dimitrov_fedavg:false"; do
    IFS=: read -r label name schedule <<< "$cell"
    dir="$out/${label}_E${e}_i${index}"
    [ -f "$dir/victims.jsonl" ] && continue
    python -m fl_privacy.launch.cli attack "${common[@]}" --set training.local_steps="$e" --set attack.name="$name" \
      --set attack.threat.schedule="$schedule" --out "$dir" | tail -1
  done
done
