'use strict';
// The cap on what the bridge reads from the binary, against a stand-in
// binary (fake-runtime, a Node script), so these run without the Rust
// build. edge/tests/bridge.rs runs this folder and counts its passes.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Bridge, MAX_BODY_BYTES } = require('..');

const context = () => ({ getRemainingTimeInMillis: () => 30000 });
const MB = 1024 * 1024;
const cap = new RegExp(`larger than the bridge's cap of ${MAX_BODY_BYTES} bytes \\(MAX_BODY_BYTES\\)`);

function fakeBridge() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-'));
  const binary = path.join(dir, 'fake.sh');
  fs.writeFileSync(binary,
    `#!/bin/sh\nexec '${process.execPath}' '${path.join(__dirname, 'fake-runtime')}'\n`, { mode: 0o755 });
  return new Bridge({ binary });
}

test('an answer over the cap fails its invocation, and the next is answered', async () => {
  const bridge = fakeBridge();
  try {
    // Chunked, so the bridge counts as it reads.
    await assert.rejects(
      bridge.invoke({ post: 'response', bytes: 3 * MB, declare: false }, context()),
      (err) => cap.test(err.message) && /answer/.test(err.message),
    );
    const small = await bridge.invoke({ post: 'response', bytes: 100, declare: false }, context());
    assert.strictEqual(small.pad.length, 100 - '{"pad":""}'.length);
    // CloudFront's own limit fits under the cap.
    const big = await bridge.invoke({ post: 'response', bytes: MB, declare: true }, context());
    assert.strictEqual(big.pad.length, MB - '{"pad":""}'.length);
    assert.strictEqual(bridge.starts, 2, 'restarted once, after the refused answer');
  } finally {
    await bridge.close();
  }
});

test('an error report over the cap fails its invocation, and the next is answered', async () => {
  const bridge = fakeBridge();
  try {
    // Declared up front: refused before any of it is read.
    await assert.rejects(
      bridge.invoke({ post: 'error', bytes: 3 * MB, declare: true }, context()),
      (err) => cap.test(err.message) && /error report/.test(err.message),
    );
    await assert.rejects(
      bridge.invoke({ post: 'error', bytes: 100, declare: false }, context()),
      /^Error: Padded: x+$/,
    );
    const small = await bridge.invoke({ post: 'response', bytes: 100, declare: true }, context());
    assert.strictEqual(small.pad.length, 100 - '{"pad":""}'.length);
    assert.strictEqual(bridge.starts, 2, 'restarted once, after the refused error report');
  } finally {
    await bridge.close();
  }
});
