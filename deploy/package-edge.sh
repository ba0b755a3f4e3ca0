#!/usr/bin/env bash
# Builds the Lambda@Edge package: a zip holding
#   bootstrap            the release `edge` binary (x86_64 Linux, glibc <= 2.34)
#   index.js             the Node.js bridge (edge/bridge/index.js)
#   origin-router.toml   your configuration, validated by `edge --check-config`:
#                        CloudFront-ready origins (DNS names), and the
#                        rankings table in store.dynamodb_table (without it
#                        the edge would read an empty local store in Lambda)
# and fails if it exceeds the Lambda@Edge limit for origin-request
# functions (50 MB zipped).
#
# Usage: deploy/package-edge.sh CONFIG [OUT.zip]
#   EDGE_BINARY=path   package this binary instead of building one
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
config=${1:?usage: deploy/package-edge.sh CONFIG [OUT.zip]}
out=${2:-$root/target/origin-router-edge.zip}
limit=$((50 * 1024 * 1024))
# Amazon Linux 2023, the OS of the Lambda Node.js runtimes, has glibc 2.34.
max_glibc=2.34

if [ "$(uname -m)" != x86_64 ]; then
  echo "error: build on x86_64 Linux (Lambda@Edge runs x86_64 only)" >&2
  exit 1
fi
binary=${EDGE_BINARY:-}
if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release -p edge --bin edge)
  binary=$root/target/release/edge
fi
[ -x "$binary" ] || { echo "error: $binary is not an executable" >&2; exit 1; }

"$binary" --check-config "$config"

command -v objdump >/dev/null || { echo "error: objdump (binutils) is needed to check glibc versions" >&2; exit 1; }
needed=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
if [ "$(printf '%s\n%s\n' "$needed" "$max_glibc" | sort -V | tail -n 1)" != "$max_glibc" ]; then
  echo "error: $binary needs glibc $needed; the Lambda runtime has $max_glibc" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
python3 - "$out" "$binary" "$root/edge/bridge/index.js" "$config" <<'PY'
import sys, zipfile
out, binary, bridge, config = sys.argv[1:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for path, name, mode in ((binary, "bootstrap", 0o755), (bridge, "index.js", 0o644), (config, "origin-router.toml", 0o644)):
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            z.writestr(info, f.read())
PY
size=$(stat -c %s "$out")
echo "wrote $out: $size bytes ($(awk "BEGIN {printf \"%.1f\", $size / 1048576}") MiB, limit 50 MiB), glibc >= $needed needed"
if [ "$size" -gt "$limit" ]; then
  echo "error: the package exceeds the Lambda@Edge origin-request limit of 50 MB" >&2
  exit 1
fi
