#!/usr/bin/env bash
# Wheels the device machine lacks (pure Python), for Python 3.12, into .whl/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0
