// Runs the generated CloudFront Function under Node over cases read as
// JSON lines from stdin, one result line each:
//   {"kvs": {key: value}, "region": "...", "now": ms, "event": {...},
//    "distributionOrigins": [...] (optional)}
//   -> {"decision": {...}, "calls": [...]} or {"error": "..."}
// With `--bench N` it runs the first case N times and prints the
// per-call times (ns, sorted) as one JSON line instead.
//   node harness.mjs FUNCTION.mjs [--allow-ip] [--bench N] < cases.jsonl
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const fnPath = args[0];
const allowIp = args.includes('--allow-ip');
const benchAt = args.indexOf('--bench');
const { handler } = await import(pathToFileURL(fnPath).href);
const { state } = await import('cloudfront');
state.allowIp = allowIp;

const realNow = Date.now;
const lines = readFileSync(0, 'utf8').split('\n').filter((l) => l.trim());

function prepare(c) {
  state.kvs = c.kvs || {};
  state.edgeLocation = { name: 'TST', serverIp: '127.0.0.1', region: c.region };
  state.distributionOrigins = c.distributionOrigins || null;
  state.calls = [];
  state.decision = null;
  Date.now = () => c.now;
}

if (benchAt >= 0) {
  const n = Number(args[benchAt + 1]);
  const c = JSON.parse(lines[0]);
  const times = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    prepare(c);
    const event = structuredClone(c.event);
    const t0 = process.hrtime.bigint();
    await handler(event);
    times[i] = Number(process.hrtime.bigint() - t0);
  }
  Date.now = realNow;
  times.sort();
  const at = (q) => times[Math.min(n - 1, Math.ceil(q * n) - 1)];
  console.log(JSON.stringify({ calls: n, p50_ns: at(0.5), p99_ns: at(0.99), max_ns: times[n - 1] }));
} else {
  const out = [];
  for (const line of lines) {
    const c = JSON.parse(line);
    prepare(c);
    try {
      const request = await handler(c.event);
      out.push(JSON.stringify({ decision: state.decision, calls: state.calls, request }));
    } catch (e) {
      out.push(JSON.stringify({ error: String(e && e.stack || e) }));
    }
  }
  Date.now = realNow;
  process.stdout.write(out.join('\n') + '\n');
}
