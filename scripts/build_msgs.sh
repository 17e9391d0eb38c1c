#!/usr/bin/env bash
# Build the ros_fer_msgs interface package against the ROS 2 wheels in .venv and install it into the venv
# prefix, where the wheels' bootstrapper puts <venv>/lib on the library path. For a ROS install, use colcon.
#   bash scripts/build_msgs.sh [PACKAGE_DIR PREFIX]   # another interface package into another prefix (tests)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$PWD/.venv
PKG=${1:-ros_fer_msgs}
PREFIX=${2:-$VENV}
NAME=$(basename "$PKG")
PY=$VENV/bin/python
# The wheels' CMake exports name the include folders of the machine they were built on; point them at ours.
PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NP_INC=$("$PY" -c 'import numpy; print(numpy.get_include())')
if [ ! -f "$PY_INC/Python.h" ]; then
  echo "build_msgs: Python headers missing ($PY_INC/Python.h); install them: apt-get install python3-dev" >&2
  exit 1
fi
for f in $(grep -rl "/opt/python/cp311-cp311" "$VENV/share" --include='*.cmake' 2>/dev/null || true); do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INC#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INC#g" "$f"
done
BUILD=${2:+$PREFIX/build}
BUILD=${BUILD:-$PWD/build/$NAME}
mkdir -p "$BUILD"
# CMake and the rosidl generators run Python: the venv's, with the wheels' libraries on the path.
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 LD_LIBRARY_PATH="$VENV/lib:${LD_LIBRARY_PATH:-}"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
cmake -S "$PKG" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" -DPython3_FIND_VIRTUALENV=ONLY -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$BUILD.log" 2>&1 \
  || { tail -40 "$BUILD.log" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" >>"$BUILD.log" 2>&1 || { tail -40 "$BUILD.log" >&2; exit 1; }
cmake --install "$BUILD" >>"$BUILD.log" 2>&1 || { tail -40 "$BUILD.log" >&2; exit 1; }
if [ "$PKG" = ros_fer_msgs ]; then
  "$PY" -c 'from ros_fer_msgs.msg import EmotionArray, PersonEmotion; print("build_msgs: ros_fer_msgs ok")'
else
  echo "build_msgs: $NAME installed into $PREFIX"
fi
