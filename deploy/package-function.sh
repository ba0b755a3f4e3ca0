#!/usr/bin/env bash
# Packages the CloudFront Function edge: runs the generator
# (`edge cloudfront-function --config CONFIG`) on your configuration and
# writes, into OUT_DIR,
#   function.yaml           deploy/function.yaml with the generated code
#                           inlined (a YAML block scalar) and the example
#                           distribution's origins taken from the config
#   origin-router.js        the generated code, as CloudFront will run it
#   distribution-origins.json
#                           the same origins in the CloudFront API's shape
#                           (DistributionConfig.Origins), for adding them to
#                           an existing distribution
# The code is inlined because it is up to 10 KB and a CloudFormation
# parameter holds at most 4 KB. Refuses a config without pools, code that
# does not start with `import cf from 'cloudfront';` (runtime 2.0's module
# import, which must be the first line), and code over CloudFront's 10 KB
# function size limit.
#
# Every origin the function can pick must exist in the distribution with
# the config's origin id as its CloudFront origin id: an origin group made
# by cf.createRequestOriginGroup() names its two members by origin id, and
# only origins the distribution defines.
#
# Usage: deploy/package-function.sh CONFIG [OUT_DIR]
#   EDGE_BINARY=path   run this generator instead of building the edge binary
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
config=${1:?usage: deploy/package-function.sh CONFIG [OUT_DIR]}
out=${2:-$root/target/function-package}
# CloudFront Functions quota: maximum function size 10 KB.
limit=10240

[ -f "$config" ] || { echo "error: $config: no such file" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 (3.11 or newer, for tomllib) is needed" >&2; exit 1; }

# The origins the distribution needs, from the config; refuses a config
# without pools before anything is built.
origins_json=$(python3 - "$config" <<'PY'
import json, re, sys
try:
    import tomllib
except ImportError:
    sys.exit("error: python3 3.11 or newer is needed (tomllib)")
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError) as e:
    sys.exit(f"error: {path}: {e}")
pools = cfg.get("pools") or {}
if not pools:
    sys.exit(f"error: {path}: no pools ([pools.NAME] with origins): the function would have nothing to route")

def whole_seconds(value, default, field):
    if value is None:
        return default
    m = re.fullmatch(r"\s*(\d+)\s*s\s*", str(value))
    if not m:
        sys.exit(f"error: {path}: {field}: {value!r}: CloudFront takes whole seconds (e.g. \"1s\")")
    return int(m.group(1))

origins, seen = [], {}
for pool_name, pool in pools.items():
    listed = pool.get("origins") or []
    if not listed:
        sys.exit(f"error: {path}: pools.{pool_name}.origins: at least one origin is required")
    cf = pool.get("cloudfront") or {}
    connect = whole_seconds(cf.get("connect_floor"), 1, f"pools.{pool_name}.cloudfront.connect_floor")
    read = whole_seconds(cf.get("read_timeout"), None, f"pools.{pool_name}.cloudfront.read_timeout")
    for o in listed:
        protocol = o.get("protocol", "https")
        port = int(o.get("port") or (443 if protocol == "https" else 80))
        origin = {"id": o["id"], "host": o["host"], "protocol": protocol, "port": port,
                  "connect": connect, "read": read}
        key = (o["host"], protocol, port)
        if o["id"] in seen:
            prev = seen[o["id"]]
            if (prev["host"], prev["protocol"], prev["port"]) != key:
                sys.exit(f"error: {path}: origin id {o['id']!r} names two different origins "
                         f"({prev['host']} and {o['host']}): CloudFront origin ids are unique per distribution")
            prev["connect"] = min(prev["connect"], connect)
            continue
        seen[o["id"]] = origin
        origins.append(origin)
routing = cfg.get("routing") or {}
first = pools.get(routing.get("default_pool")) or next(iter(pools.values()))
target = first.get("default_origin") or first["origins"][0]["id"]
print(json.dumps({"origins": origins, "target": target}))
PY
)

binary=${EDGE_BINARY:-}
if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release -p edge --bin edge)
  binary=$root/target/release/edge
fi
[ -x "$binary" ] || { echo "error: $binary is not an executable" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$binary" cloudfront-function --config "$config" >"$tmp/origin-router.js"; then
  echo "error: the generator failed: $binary cloudfront-function --config $config" >&2
  exit 1
fi
size=$(stat -c %s "$tmp/origin-router.js")
if [ "$size" -eq 0 ]; then
  echo "error: the generator printed no code" >&2
  exit 1
fi
if [ "$(head -n 1 "$tmp/origin-router.js" | tr -d '\r')" != "import cf from 'cloudfront';" ]; then
  echo "error: the generated code must start with: import cf from 'cloudfront';" >&2
  exit 1
fi
if [ "$size" -gt "$limit" ]; then
  echo "error: the generated function is $size bytes; CloudFront Functions take at most $limit (10 KB): fewer pools, origins or regions in the config" >&2
  exit 1
fi

python3 - "$root/deploy/function.yaml" "$tmp" "$origins_json" <<'PY'
import json, sys
template, tmp, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
code = open(f"{tmp}/origin-router.js", encoding="utf-8").read()
lines = open(template, encoding="utf-8").read().split("\n")

def replace_block(lines, begin, end, new):
    i = next(n for n, l in enumerate(lines) if begin in l)
    j = next(n for n, l in enumerate(lines) if end in l and n > i)
    return lines[:i] + new + lines[j + 1:]

# The code as a literal block scalar; the explicit indentation indicator
# keeps any leading spaces of the code's lines as they are.
code_lines = ["      FunctionCode: |2"]
code_lines += [("        " + l) if l else "" for l in code.rstrip("\n").split("\n")]
lines = replace_block(lines, "# BEGIN generated code", "# END generated code", code_lines)

cfn_origins, api_origins = ["        Origins:"], []
for o in spec["origins"]:
    https = o["protocol"] == "https"
    cfn_origins += [
        f"          - Id: {json.dumps(o['id'])}",
        f"            DomainName: {json.dumps(o['host'])}",
        "            ConnectionAttempts: 1",
        f"            ConnectionTimeout: {o['connect']}",
        "            CustomOriginConfig:",
        f"              OriginProtocolPolicy: {'https-only' if https else 'http-only'}",
        f"              {'HTTPSPort' if https else 'HTTPPort'}: {o['port']}",
        "              OriginSSLProtocols: [TLSv1.2]",
    ]
    if o["read"] is not None:
        cfn_origins.append(f"              OriginReadTimeout: {o['read']}")
    custom = {
        "HTTPPort": o["port"] if not https else 80,
        "HTTPSPort": o["port"] if https else 443,
        "OriginProtocolPolicy": "https-only" if https else "http-only",
        "OriginSslProtocols": {"Quantity": 1, "Items": ["TLSv1.2"]},
        "OriginReadTimeout": o["read"] if o["read"] is not None else 30,
        "OriginKeepaliveTimeout": 5,
    }
    api_origins.append({
        "Id": o["id"], "DomainName": o["host"], "OriginPath": "",
        "CustomHeaders": {"Quantity": 0},
        "CustomOriginConfig": custom,
        "ConnectionAttempts": 1, "ConnectionTimeout": o["connect"],
    })
cfn_origins += ["        DefaultCacheBehavior:", f"          TargetOriginId: {json.dumps(spec['target'])}"]
lines = replace_block(lines, "# BEGIN generated origins", "# END generated origins", cfn_origins)

open(f"{tmp}/function.yaml", "w", encoding="utf-8").write("\n".join(lines))
json.dump({"Quantity": len(api_origins), "Items": api_origins},
          open(f"{tmp}/distribution-origins.json", "w"), indent=2)
PY

mkdir -p "$out"
cp "$tmp/function.yaml" "$tmp/origin-router.js" "$tmp/distribution-origins.json" "$out/"
count=$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["origins"]))' "$origins_json")
echo "wrote $out/function.yaml: function $size bytes (limit $limit, 10 KB), $count origins"
