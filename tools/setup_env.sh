#!/usr/bin/env bash
# Create or update the project's virtual environment (called by `make setup`).
#
# Idempotent: every step checks before it acts, so a second run only re-installs the
# package metadata. Works on a fresh Debian/Ubuntu machine with Python 3.11, as root
# (installs missing Debian packages) or as a user (prints what to install).
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

# --- Debian packages: OSMesa for headless MuJoCo rendering; sdformat tools (optional). ---
apt_missing=()
ldconfig -p 2>/dev/null | grep -q 'libOSMesa\.so' || apt_missing+=(libosmesa6)
if [ "${ROBOSTRAL_SDF_TOOLS:-1}" = 1 ] && ! command -v ign >/dev/null; then
    apt_missing+=(ignition-tools libsdformat-dev)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && as_root true; then
        say "installing Debian packages: ${apt_missing[*]}"
        # A fresh machine has no package lists; ignition-tools is optional (SDF test only).
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 >/dev/null \
            || { say "ERROR: could not install libosmesa6"; exit 1; }
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            ignition-tools libsdformat-dev >/dev/null 2>&1 \
            || say "note: ignition-tools not installable; the SDF validation test will skip"
    else
        say "missing Debian packages: ${apt_missing[*]}"
        say "run: sudo apt-get install ${apt_missing[*]}   (libosmesa6 is needed to render the cell)"
    fi
fi

# --- The venv: reuse a sourced ROS 2 install when there is one. ---
if [ ! -x "$VENV/bin/python" ]; then
    if "$PYTHON" -c 'import rclpy' 2>/dev/null; then
        say "found a system rclpy (${ROS_DISTRO:-sourced ROS 2}): venv with --system-site-packages"
        "$PYTHON" -m venv --system-site-packages "$VENV"
        touch "$VENV/.system-ros"
    else
        say "no system rclpy: venv with the ROS 2 wheels from PyPI"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# pip is chatty (local index warnings, setuptools notices): show its output only on failure.
quiet() { "$@" >"$LOG" 2>&1 || { cat "$LOG"; say "ERROR: $*"; exit 1; }; }

if [ ! -e "$VENV/.system-ros" ]; then
    quiet "${PIP[@]}" -r requirements/ros.txt
fi
# torch: keep an installed build (e.g. the user's CUDA torch), else the CPU pin.
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    say "installing $TORCH_SPEC"
    quiet "${PIP[@]}" "$TORCH_SPEC"
fi
quiet "${PIP[@]}" -r requirements/base.txt
quiet "${PIP[@]}" --no-deps -r requirements/nodeps.txt
quiet "${PIP[@]}" --no-deps -e .
say "environment ready in $VENV"
