#!/usr/bin/env bash
# Install everything sycri needs on Debian 12 (as root): system packages from
# .ci/apt-packages.txt and a virtual environment at .venv with sycri and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
grep -v '^\s*#' .ci/apt-packages.txt | xargs apt-get install -y -qq --no-install-recommends >/dev/null
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
echo "setup done: $(.venv/bin/sycri version)"
