#!/usr/bin/env bash
# The README's first command as a new user would run it (issue 16): a fresh venv, an empty pip
# cache, an empty ONNXG_HOME and no C compiler on the PATH; times each step, then three second
# starts, then the disk used. Usage: benchmarks/firstrun/measure.sh REPO_DIR OUT_DIR
# (PYTHON=/path/to/python3.11 picks the interpreter; port 8080 must be free).
set -u
SRC=$(cd "$1" && pwd); OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$OUT"; mkdir -p "$OUT/nocc"
for d in /usr/local/bin /usr/bin /bin; do
  for f in "$d"/*; do
    b=$(basename "$f")
    case "$b" in gcc*|cc|c++|g++*|clang*|*-gcc*|*-g++*|cpp*|ld|ld.*|as|tcc|c89*|c99*|cmake*|make|ninja) continue;; esac
    [ -e "$OUT/nocc/$b" ] || ln -s "$f" "$OUT/nocc/$b"
  done
done
PY=$(command -v "${PYTHON:-python3}")
export PATH="$OUT/nocc"
unset CC CXX
export PIP_CACHE_DIR="$OUT/pipcache" ONNXG_HOME="$OUT/home"
mkdir -p "$PIP_CACHE_DIR" "$ONNXG_HOME"
uptime
echo "which gcc: $(command -v gcc || echo none); cc: $(command -v cc || echo none)"
cp -r "$SRC" "$OUT/src"; rm -rf "$OUT/src/build" "$OUT/src/.git"
cd "$OUT/src"
t0=$(date +%s.%N)
$PY -m venv "$OUT/venv"
t1=$(date +%s.%N)
. "$OUT/venv/bin/activate"
pip install -q '.[default-models]' > "$OUT/pip.log" 2>&1; echo "pip exit $?"
t2=$(date +%s.%N)
python "$HERE/serve_timed.py" "$OUT/serve.log" curls
t3=$(date +%s.%N)
echo "venv $(echo "$t1-$t0"|bc) s; pip install $(echo "$t2-$t1"|bc) s; first serve + curls $(echo "$t3-$t2"|bc) s; TOTAL $(echo "$t3-$t0"|bc) s"
for i in 1 2 3; do python "$HERE/serve_timed.py" "$OUT/serve2-$i.log"; done
du -sh "$OUT/venv" "$ONNXG_HOME" "$ONNXG_HOME"/* "$PIP_CACHE_DIR" 2>/dev/null
