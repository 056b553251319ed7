#!/usr/bin/env bash
# Build the package with colcon in a throw-away workspace, as an integrator would, and check
# that the install tree holds what `ros2 run` / `ros2 launch` need. Usage: colcon_check.sh [DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WS=${1:-$(mktemp -d)}
VENV=${VENV:-$ROOT/.venv}
# Copy only tracked and new files (no venv, no build outputs), like a fresh checkout.
mkdir -p "$WS/src/robostral_agent"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$WS/src/robostral_agent/")
cd "$WS"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
"$VENV/bin/python" -m colcon build --base-paths src/robostral_agent \
    --event-handlers console_cohesion- >"$WS/colcon.log" 2>&1 || { cat "$WS/colcon.log"; exit 1; }
SHARE="$WS/install/robostral_agent/share/robostral_agent"
test -f "$WS/install/robostral_agent/share/ament_index/resource_index/packages/robostral_agent"
test -f "$SHARE/package.xml"
echo "colcon build OK: $WS/install/robostral_agent"
