#!/bin/sh
# The image's entrypoint (under tini): say at once whether this container can use its GPUs, then run
# the command (by default `cudalab lab up --host 0.0.0.0`). The doctor never stops the container: a
# CPU-only start is legitimate; the banner names the cause and the fix (a driver too old for this
# image's CUDA names the image variant that driver runs). CUDALAB_SKIP_DOCTOR=1 skips it.
set -eu
CUDALAB_IMAGE="${CUDALAB_IMAGE:-$(cat /opt/venv/cudalab-image 2>/dev/null || echo cudalab)}"
export CUDALAB_IMAGE
if [ "${CUDALAB_SKIP_DOCTOR:-0}" != "1" ]; then
    cudalab doctor --banner || true
fi
exec "$@"
