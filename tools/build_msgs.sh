#!/usr/bin/env bash
# Build an interface package with cmake and install it into the venv: msg/ (ros_amf_msgs) by default,
# or the vendored msg/vision_msgs.
# Usage: tools/build_msgs.sh VENV_DIR BUILD_DIR [SOURCE_DIR]
set -euo pipefail
venv=$(cd "$1" && pwd)
build=$2
source_dir=${3:-msg}
mkdir -p "$build"
py="$venv/bin/python"

# The ros-* wheels export CMake targets naming include directories of the machine they were
# built on (/opt/python/cp311-cp311/...). Point them at this venv's real Python and numpy
# include directories instead, so CMake's generate step finds them (idempotent).
py_inc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_inc=$("$py" -c "import numpy; print(numpy.get_include())")
{ grep -rlE "/opt/python/cp3[0-9]+-cp3[0-9]+" "$venv/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" "$f"
done

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cmake -S "$source_dir" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -Wno-dev > "$build.configure.log" 2>&1 \
  || { tail -30 "$build.configure.log"; echo "error: configuring $source_dir failed; full log: $build.configure.log" >&2; exit 1; }
cmake --build "$build" -j 2 > "$build.build.log" 2>&1 \
  || { tail -30 "$build.build.log"; echo "error: compiling $source_dir failed; full log: $build.build.log" >&2; exit 1; }
cmake --install "$build" > "$build.install.log" 2>&1 \
  || { tail -30 "$build.install.log"; echo "error: installing $source_dir into $venv failed; full log: $build.install.log" >&2; exit 1; }
