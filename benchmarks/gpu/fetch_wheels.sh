#!/usr/bin/env bash
# Run HERE (a machine with the package registry) before a GPU session: puts into .whl/ the
# wheels of what requirements.txt needs and the GPU machine's image lacks, built for its
# Python 3.12 (see ../.library/device/README.md and KINDS.md for the image's package list).
# `run` then carries .whl and benchmarks/gpu/session.sh installs it with --no-deps into
# /tmp/site. About 45 MB (33 MB of it MuJoCo and MJX, for the PPD stage).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
tmp="$(mktemp -d)"
# `promise` (a tensorflow-datasets dependency) ships only as an sdist: build its pure wheel.
python3 -m pip wheel -q --no-deps promise -w "$tmp"
python3 -m pip download -q --only-binary=:all: --find-links "$tmp" --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$tmp" \
  "ml-collections>=1.0" "tensorflow-datasets>=4.9.9" "importlib_resources>=6" \
  "array-record>=0.8" "grain>=0.2.15" "sacremoses>=0.1" \
  $(grep -h -o '^mujoco[a-z-]*==[0-9.]*' requirements.txt requirements-bench.txt)
# Keep only what the image does not have (its numpy, protobuf, ... must not be shadowed).
rm -rf .whl && mkdir .whl
for name in array_record dm_tree docstring_parser googleapis_common_protos grain \
    immutabledict importlib_resources ml_collections portpicker promise sacremoses \
    simple_parsing tensorflow_datasets tensorflow_metadata termcolor toml \
    mujoco mujoco_core mujoco_studio mujoco_studio_wasm glfw pyopengl websockets \
    mujoco_mjx trimesh; do
  cp "$tmp"/"$name"-[0-9]*.whl .whl/
done
rm -rf "$tmp"
du -sh .whl
