# cudalab image: login shells (ssh sessions) find the image's Python and the lab's folders first.
export PATH="/opt/venv/bin:${PATH}"
export VIRTUAL_ENV=/opt/venv
export CUDALAB_STATE_DIR=/var/lib/cudalab CUDALAB_WORKSPACE=/workspace CUDALAB_DATA=/data
export CUDALAB_PINNED=/opt/venv/constraints.txt
CUDALAB_IMAGE="$(cat /opt/venv/cudalab-image 2>/dev/null || echo cudalab)"
export CUDALAB_IMAGE
