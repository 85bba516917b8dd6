#!/usr/bin/env bash
# The main job end to end on built-in data (scikit-learn digits: no download; CPU is enough):
# train two MLPs from different seeds, merge them naively, with weight matching, and with
# weight matching + REPAIR, compare, and plot the three configurations' interpolation paths and
# vanishing-feature diagnostics, each overlaid in one figure.
set -euo pipefail
out=${1:-runs/demo}
wl=.venv/bin/weightlab
a=$out/pair/model_1.safetensors
b=$out/pair/model_2.safetensors
mkdir -p "$out"
echo "== 1. train two MLPs on digits (seeds 0 and 1)"
$wl train mlp --data digits --pair --epochs 30 --batch-size 64 --lr 0.05 \
    --param width=128 --param depth=3 --out "$out/pair" --force
echo "== 2. merge at alpha = 0.5: naive, weight matching, weight matching + REPAIR"
$wl merge "$a" "$b" --matcher identity -o "$out/naive.safetensors" --force --no-evaluate
$wl merge "$a" "$b" --matcher weight -o "$out/weight.safetensors" --force --no-evaluate
$wl merge "$a" "$b" --matcher weight --normalizer repair -o "$out/weight_repair.safetensors" \
    --force --no-evaluate
$wl evaluate "$a" "$b" "$out/naive.safetensors" "$out/weight.safetensors" \
    "$out/weight_repair.safetensors"
echo "== 3. interpolation paths and vanishing-feature diagnostics of the three configurations"
for cfg in "naive:--matcher identity" "weight:--matcher weight" \
           "weight_repair:--matcher weight --normalizer repair"; do
    name=${cfg%%:*}
    # shellcheck disable=SC2086 # the options are meant to split
    $wl interpolate "$a" "$b" ${cfg#*:} --points 11 --json > "$out/interpolation_$name.json"
    $wl diagnose "$a" "$b" --merged "$out/$name.safetensors" --json > "$out/diagnose_$name.json"
done
echo "== 4. one figure per question: naive vs weight matching vs weight matching + REPAIR"
$wl plot "$out"/interpolation_{naive,weight,weight_repair}.json \
    --label naive --label "weight matching" --label "weight matching + REPAIR" \
    -o "$out/interpolation.png" --force
$wl plot "$out"/diagnose_{naive,weight,weight_repair}.json \
    --label naive --label "weight matching" --label "weight matching + REPAIR" \
    -o "$out/vanishing_feature.png" --force
echo "plots: $out/interpolation.png $out/vanishing_feature.png"
