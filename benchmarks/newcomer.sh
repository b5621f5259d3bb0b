#!/usr/bin/env bash
# The README's first command as a newcomer runs it: a fresh clone of this repository's HEAD, empty
# pip and refusal_eval caches (XDG_CACHE_HOME, PIP_CACHE_DIR), the line exactly as the README
# writes it, under /usr/bin/time -v (wall time, peak RSS). Packages come from whatever index pip
# is configured with. Run it with the CPU to itself:
#   bash benchmarks/newcomer.sh [WORKDIR]      (default: a new temporary directory)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
line="$(awk '/^```bash/{getline; print; exit}' "$repo/README.md")"
git clone -q "$repo" "$work/clone"
mkdir -p "$work/xdg" "$work/pip"
echo "commit $(git -C "$work/clone" rev-parse --short HEAD); command: $line"
cd "$work/clone"
XDG_CACHE_HOME="$work/xdg" PIP_CACHE_DIR="$work/pip" /usr/bin/time -v bash -c "$line" > "$work/run.log" 2> "$work/time.log"
echo "rc 0; log $work/run.log"
grep -E "Elapsed \(wall clock\)|Maximum resident set size" "$work/time.log"
sed -n '/^refusal_eval summary/,/^baseline refusal corrected/p' "$work/run.log"
