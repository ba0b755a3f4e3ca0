#!/usr/bin/env bash
# Rewrites runtime.min.js from runtime.js with terser (pinned below): a
# CloudFront Function may hold 10 KB of code, and the readable runtime is
# larger than that on its own. `edge/tests/function.rs` checks that the
# committed runtime.min.js is what this gives. No inlining: inlined
# functions become closures inside the async handler, which the runtime
# does not support.
#   TERSER=/path/to/terser bash edge/src/function/minify.sh
# (OUT=FILE writes elsewhere: the test compares.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
terser="${TERSER:-terser}"
"$terser" "$here/runtime.js" \
  --module --ecma 5 \
  --compress passes=2,top_retain=[handler],inline=false,reduce_funcs=false \
  --mangle reserved=[handler,cf] \
  --format ascii_only=true \
  --output "${OUT:-$here/runtime.min.js}"
