'use strict';
// The bridge against the real edge binary. Run by edge/tests/bridge.rs,
// which builds a config and an embedded store and passes them in:
// EDGE_BINARY, EDGE_CONFIG, EDGE_BAD_CONFIG, FIXTURE, EXPECT_DOMAIN.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Bridge } = require('..');

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through cargo test -p edge --test bridge)`);
  return value;
};
const fixture = () => JSON.parse(fs.readFileSync(need('FIXTURE'), 'utf8'));
const context = (ms = 30000) => ({ getRemainingTimeInMillis: () => ms });

test('passes a CloudFront event through the binary and returns the rewritten request', async () => {
  const bridge = new Bridge({ binary: need('EDGE_BINARY'), config: need('EDGE_CONFIG') });
  try {
    const request = await bridge.invoke(fixture(), context());
    assert.strictEqual(request.origin.custom.domainName, need('EXPECT_DOMAIN'));
    assert.strictEqual(request.uri, '/');
    // The same process answers the next event: started once per container.
    const again = await bridge.invoke(fixture(), context());
    assert.strictEqual(again.origin.custom.domainName, need('EXPECT_DOMAIN'));
    assert.strictEqual(bridge.starts, 1);
  } finally {
    await bridge.close();
  }
});

test('each decision line is written before its invocation returns', async () => {
  // The binary writes its line after its answer; the bridge returns only
  // once the binary has ended the invocation, so the line is already there.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-'));
  const log = path.join(dir, 'stdout.log');
  const fd = fs.openSync(log, 'a');
  const bridge = new Bridge({ binary: need('EDGE_BINARY'), config: need('EDGE_CONFIG'), stdout: fd });
  try {
    for (let i = 1; i <= 20; i += 1) {
      await bridge.invoke(fixture(), context());
      const lines = fs.readFileSync(log, 'utf8').split('\n')
        .filter((line) => line.includes('"message":"origin decision"'));
      assert.strictEqual(lines.length, i, `decision lines after invocation ${i}`);
      assert.strictEqual(JSON.parse(lines[i - 1]).Origin, 'eu');
    }
  } finally {
    await bridge.close();
    fs.closeSync(fd);
  }
});

test('an origin-response event comes back as the response it carries, unchanged', async () => {
  // The function is attached to origin-response too (passive ejection).
  const file = path.join(path.dirname(need('FIXTURE')), 'origin-response.json');
  const event = JSON.parse(fs.readFileSync(file, 'utf8'));
  event.Records[0].cf.response.status = '503';
  const bridge = new Bridge({ binary: need('EDGE_BINARY'), config: need('EDGE_CONFIG') });
  try {
    for (let i = 0; i < 3; i += 1) {
      const response = await bridge.invoke(event, context());
      assert.deepStrictEqual(response, event.Records[0].cf.response);
    }
    const request = await bridge.invoke(fixture(), context());
    assert.strictEqual(request.origin.custom.domainName, need('EXPECT_DOMAIN'));
  } finally {
    await bridge.close();
  }
});

test('a malformed event fails the invocation with the binary\'s named error', async () => {
  const bridge = new Bridge({ binary: need('EDGE_BINARY'), config: need('EDGE_CONFIG') });
  try {
    const event = fixture();
    delete event.Records[0].cf.request.uri;
    await assert.rejects(bridge.invoke(event, context()), /MalformedEvent: .*Records\[0\]\.cf\.request/);
    // The binary survives a bad event.
    const request = await bridge.invoke(fixture(), context());
    assert.strictEqual(request.origin.custom.domainName, need('EXPECT_DOMAIN'));
    assert.strictEqual(bridge.starts, 1);
  } finally {
    await bridge.close();
  }
});

test('a binary that dies is restarted on the next invocation', async () => {
  const bridge = new Bridge({ binary: need('EDGE_BINARY'), config: need('EDGE_CONFIG') });
  try {
    await bridge.invoke(fixture(), context());
    const exited = new Promise((resolve) => bridge.child.once('exit', resolve));
    bridge.child.kill('SIGKILL');
    await exited;
    const request = await bridge.invoke(fixture(), context());
    assert.strictEqual(request.origin.custom.domainName, need('EXPECT_DOMAIN'));
    assert.strictEqual(bridge.starts, 2);
  } finally {
    await bridge.close();
  }
});

test('a binary that never answers fails the invocation within the budget, not at the function timeout', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-'));
  const hang = path.join(dir, 'hang.sh');
  fs.writeFileSync(hang, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
  const bridge = new Bridge({ binary: hang, config: need('EDGE_CONFIG'), answerTimeoutMs: 500 });
  try {
    const started = Date.now();
    await assert.rejects(bridge.invoke(fixture(), context()), /did not answer within 500 ms/);
    assert.ok(Date.now() - started < 1500, 'failed within the budget');
  } finally {
    await bridge.close();
  }
});

test('a binary that cannot start reports why', async () => {
  const bridge = new Bridge({ binary: need('EDGE_BINARY'), config: need('EDGE_BAD_CONFIG') });
  try {
    await assert.rejects(bridge.invoke(fixture(), context()), /exited with code 1: .*is not a valid port/);
  } finally {
    await bridge.close();
  }
});
