#!/bin/sh
# Developer shortcut: recompile only the named kernels/cpp sources for one level and relink
# pydl/_cpp_<level>*.so from the objects a full `setup.py build_ext` left in build/ (the same
# flags setup.py uses). Usage: dev/norm/quickbuild.sh avx512 loss norm
set -e
cd "$(dirname "$0")/../.."
LEVEL=$1; shift
case $LEVEL in avx512) MARCH=x86-64-v4;; avx2) MARCH=x86-64-v3;; base) MARCH=x86-64-v2;; *) echo "level?"; exit 2;; esac
PY=${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python}
INC="-Ikernels/common -Ikernels/cpp -I$($PY -c 'import pybind11;print(pybind11.get_include())') -I$($PY -c 'import sysconfig;print(sysconfig.get_paths()["include"])')"
OBJ=build/temp.linux-x86_64-cpython-311/build/pydl-src/cpp_$LEVEL
pids=""
for f in "$@"; do
  gcc -DNDEBUG -fwrapv -O3 -Wall -fPIC $INC -c build/pydl-src/cpp_$LEVEL/$f.cpp -o $OBJ/$f.o -fvisibility=hidden -g0 \
    -std=c++17 -O3 -fopenmp -fno-math-errno -march=$MARCH -mtune=generic -DPYDL_ARCH=\"$MARCH\" \
    -DPYDL_MODULE=_cpp_$LEVEL -DPYDL_BUILD_KIND=\"portable\" -DPYDL_SANITIZE_FLAGS=\"\" &
  pids="$pids $!"
done
for p in $pids; do wait $p; done
g++ -shared $OBJ/*.o -o pydl/_cpp_$LEVEL.cpython-311-x86_64-linux-gnu.so -fopenmp
