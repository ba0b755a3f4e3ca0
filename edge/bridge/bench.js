'use strict';
// One invocation through the Lambda@Edge bridge and the real edge binary:
// p50 and p99 of `bridge.invoke` over N warm invocations of the CloudFront
// fixture, answered from a fresh ranking in an embedded store made here.
// The edge's stdout is this process's: pipe it into a reader, as Lambda's
// log agent reads a function's stdout.
//
//   cargo build --release -p edge
//   taskset -c 1 sh -c 'node edge/bridge/bench.js target/release/edge 5000 | cat >/dev/null'
//
// Results go to stderr. `taskset -c 1` puts Node, the binary and the log
// reader on one CPU, as a Lambda@Edge function shares one vCPU.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Bridge } = require('.');

const [binary, count = '5000'] = process.argv.slice(2);
if (!binary) {
  console.error('usage: node bench.js EDGE_BINARY [INVOCATIONS]');
  process.exit(2);
}
const n = Number(count);
if (!Number.isInteger(n) || n < 100) {
  console.error(`INVOCATIONS must be a whole number of at least 100, not ${count}`);
  process.exit(2);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-bench-'));
const store = path.join(dir, 'store');
fs.mkdirSync(path.join(store, 'web'), { recursive: true });
const origin = (id, ms) => ({
  id, state: 'healthy', score: ms, latency_ms: ms, success_ratio: 1, voters: 1, down_votes: 0,
});
fs.writeFileSync(path.join(store, 'web', 'eu-west-1.json'), JSON.stringify({
  schema_version: 1, pool: 'web', region: 'eu-west-1', seq: 1, generated_at: Date.now(),
  probe_interval_ms: 5000, workers: 1, origins: [origin('eu', 5), origin('us', 70)],
}));
const config = path.join(dir, 'origin-router.toml');
fs.writeFileSync(config, [
  '[routing]', 'default_pool = "web"',
  '[pools.web]',
  'origins = [{ id = "us", host = "origin-us.example.net" }, { id = "eu", host = "origin-eu.example.net" }]',
  '[edge]', 'cache_ttl = "1h"', 'max_stale = "1h"', 'ranking_max_age = "1h"',
  '[store]', `embedded_path = ${JSON.stringify(store)}`, '',
].join('\n'));
const fixture = JSON.parse(fs.readFileSync(
  path.join(__dirname, '..', '..', 'tests', 'fixtures', 'cloudfront', 'origin-request.json'), 'utf8',
));

(async () => {
  const bridge = new Bridge({ binary, config, env: { AWS_REGION: 'eu-west-1', RUST_LOG: 'error' } });
  const context = { getRemainingTimeInMillis: () => 30000 };
  try {
    for (let i = 0; i < 300; i += 1) await bridge.invoke(fixture, context);
    const us = [];
    for (let i = 0; i < n; i += 1) {
      const start = process.hrtime.bigint();
      const request = await bridge.invoke(fixture, context);
      us.push(Number(process.hrtime.bigint() - start) / 1000);
      if (request.origin.custom.domainName !== 'origin-eu.example.net') {
        throw new Error(`routed to ${request.origin.custom.domainName}, not origin-eu.example.net`);
      }
    }
    us.sort((a, b) => a - b);
    const at = (q) => us[Math.min(us.length - 1, Math.floor(us.length * q))].toFixed(1);
    console.error(`bridge invocation over ${n}: p50 ${at(0.5)} us, p99 ${at(0.99)} us`);
  } finally {
    await bridge.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
