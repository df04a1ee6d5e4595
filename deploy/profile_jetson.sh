#!/usr/bin/env bash
# Replace a datasheet estimate by a measurement: run ON the Jetson (JetPack 5/6) as a user that may call
# nvpmodel / jetson_clocks (root, or sudo rights for those two).
#
#   bash deploy/profile_jetson.sh [NVPMODEL_ID] [OUT.yaml]
#
# It records the software versions, sets the power mode (nvpmodel -m ID) and pins the clocks (jetson_clocks),
# runs `pcl-edge profile --backend tensorrt`, then restores the clocks. The resulting profile says
# `source: measured` with the device, versions, power mode, tool, statistics and provenance.
set -euo pipefail

MODE="${1:-0}"
OUT="${2:-hw_profiles/$(tr -d '\0' < /proc/device-tree/model | tr ' A-Z' '-a-z')-nvp${MODE}.yaml}"

[ -f /etc/nv_tegra_release ] || { echo "not a Jetson (no /etc/nv_tegra_release)" >&2; exit 2; }
command -v pcl-edge >/dev/null || { echo "pcl-edge is not installed: pip install '.[profile]'" >&2; exit 2; }
python3 -c "import tensorrt" 2>/dev/null || { echo "TensorRT Python bindings missing (apt install python3-libnvinfer)" >&2; exit 2; }

echo "L4T:       $(head -n1 /etc/nv_tegra_release)"
echo "TensorRT:  $(python3 -c 'import tensorrt; print(tensorrt.__version__)')"
echo "JetPack:   $(dpkg-query -W -f='${Version}' nvidia-jetpack 2>/dev/null || echo unknown)"

sudo nvpmodel -m "$MODE"
sudo jetson_clocks --store /tmp/pcl-edge-clocks.conf
sudo jetson_clocks
trap 'sudo jetson_clocks --restore /tmp/pcl-edge-clocks.conf' EXIT
sleep 5  # let the clocks settle

# TensorRT builds an engine per fused kernel timed alone (seconds each): 150 kernel networks keep that near the
# CPU profile's kernel count; fusion rules are detected here through the engine inspector
pcl-edge profile --backend tensorrt --precision fp16 --jetson-clocks on --out "$OUT" --holdout 50 --kernel-genomes 150
echo "profile written to $OUT (plot: ${OUT%.yaml}.png)"
