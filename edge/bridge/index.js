'use strict';
// Origin Router Lambda@Edge bridge.
//
// Lambda@Edge runs only Node.js and Python functions, with no environment
// variables and no layers. This handler starts the `bootstrap` binary (the
// same `edge` binary that runs as a provided.al2023 function) once per
// container, serves it a local Lambda Runtime API on 127.0.0.1, and passes
// each CloudFront event through it. The binary's config is bundled beside
// it as origin-router.toml.
//
// - The binary is started on the first invocation and kept for the life of
//   the container (Lambda freezes both between invocations).
// - If it exits, the invocation in flight fails with the exit status and
//   the binary's last stderr lines; the next invocation starts it again.
// - If it does not answer within the budget (5 s, less if the function's
//   remaining time is shorter), the invocation fails with a clear error and
//   the binary is restarted: nothing hangs until the function timeout.
// - The binary writes its decision line after posting its answer, and an
//   invocation ends, by the Runtime API's rules, when the binary asks for
//   its next event. So the handler returns then (or at most 100 ms after
//   the answer): Lambda may freeze the container as soon as the handler
//   returns, and the line must be written within the invocation it is for.
// - The binary's stdout is the function's own, so its lines reach Lambda's
//   log directly, not through this process.
// - A body the binary posts (answer, error, init error) is read up to
//   MAX_BODY_BYTES and no further: a larger one fails its invocation with
//   that cap named, and the binary is restarted, as after a timeout.

const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

const API = '/2018-06-01/runtime';
const DEFAULT_ANSWER_TIMEOUT_MS = 5000;
// How long an answer waits for the binary to finish its invocation.
const AFTER_ANSWER_GRACE_MS = 100;
// The most this process reads of any body the binary posts. CloudFront
// takes at most 1 MB from a Lambda@Edge function (a generated response, or
// a request with its body), so no answer it would accept comes near this;
// the half megabyte above that is slack for escaping, not a promise.
// Unbounded, a runaway 300 MB answer took Node to 1.3 GB: past the
// function's memory, which kills the container and every invocation in it.
const MAX_BODY_BYTES = 1.5 * 1024 * 1024;

class Bridge {
  constructor(options = {}) {
    this.binary = options.binary || process.env.ORIGIN_ROUTER_BOOTSTRAP || path.join(__dirname, 'bootstrap');
    this.config = options.config || process.env.ORIGIN_ROUTER_CONFIG || path.join(__dirname, 'origin-router.toml');
    this.answerTimeoutMs = options.answerTimeoutMs || DEFAULT_ANSWER_TIMEOUT_MS;
    this.env = options.env || {};
    this.stdout = options.stdout === undefined ? 'inherit' : options.stdout;
    this.server = null;
    this.port = 0;
    this.child = null;
    this.generation = 0;
    this.counter = 0;
    this.queue = [];      // invocations not yet fetched by the binary
    this.waiting = [];    // the binary's pending GET /next requests
    this.inflight = new Map();
    this.answered = [];   // answers held until the binary's invocation ends
    this.stderrTail = [];
    this.starts = 0;
  }

  async listen() {
    if (this.server) return;
    this.server = http.createServer((req, res) => this.route(req, res));
    this.server.keepAliveTimeout = 0;
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
  }

  async ensureChild() {
    await this.listen();
    if (this.child) return;
    this.generation += 1;
    this.starts += 1;
    const generation = this.generation;
    this.stderrTail = [];
    const child = spawn(this.binary, [], {
      env: {
        ...process.env,
        ...this.env,
        AWS_LAMBDA_RUNTIME_API: `127.0.0.1:${this.port}`,
        ORIGIN_ROUTER_CONFIG: this.config,
      },
      stdio: ['ignore', this.stdout, 'pipe'],
    });
    child.stderr.on('data', (chunk) => {
      process.stderr.write(chunk);
      for (const line of chunk.toString().split('\n')) {
        if (line.trim()) this.stderrTail.push(line.trim());
      }
      this.stderrTail = this.stderrTail.slice(-5);
    });
    child.on('error', (err) => this.childGone(generation, `cannot start ${this.binary}: ${err.message}`));
    child.on('exit', (code, signal) => {
      const how = signal ? `signal ${signal}` : `code ${code}`;
      const tail = this.stderrTail.length ? `: ${this.stderrTail.join(' | ')}` : '';
      this.childGone(generation, `edge binary exited with ${how}${tail}`);
    });
    this.child = child;
  }

  childGone(generation, reason) {
    if (generation !== this.generation) return;
    this.child = null;
    // Answers already given stand.
    this.endInvocations();
    for (const res of this.waiting.splice(0)) res.destroy();
    for (const [id, call] of this.inflight) {
      this.inflight.delete(id);
      clearTimeout(call.timer);
      call.reject(new Error(reason));
    }
    this.queue = [];
  }

  restart(reason) {
    const child = this.child;
    // Killed first, so it never sees its pending requests dropped below.
    if (child) child.kill('SIGKILL');
    this.childGone(this.generation, reason);
    this.generation += 1;
  }

  async invoke(event, context = {}) {
    await this.ensureChild();
    const remaining = typeof context.getRemainingTimeInMillis === 'function'
      ? context.getRemainingTimeInMillis() : 30000;
    const budget = Math.max(100, Math.min(this.answerTimeoutMs, remaining - 250));
    const id = `${Date.now().toString(36)}-${(this.counter += 1)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.inflight.has(id)) return;
        this.inflight.delete(id);
        reject(new Error(`edge binary did not answer within ${budget} ms; restarting it`));
        this.restart('restarted after a timeout');
      }, budget);
      this.inflight.set(id, { resolve, reject, timer });
      this.deliver({
        id,
        body: JSON.stringify(event),
        deadline: Date.now() + budget,
        arn: context.invokedFunctionArn || 'arn:aws:lambda:us-east-1:000000000000:function:origin-router-edge',
      });
    });
  }

  // Holds an answer until the binary ends its invocation (see the top).
  hold(settle) {
    const held = { settle, timer: null };
    held.timer = setTimeout(() => {
      this.answered = this.answered.filter((h) => h !== held);
      settle();
    }, AFTER_ANSWER_GRACE_MS);
    this.answered.push(held);
  }

  endInvocations() {
    for (const held of this.answered.splice(0)) {
      clearTimeout(held.timer);
      held.settle();
    }
  }

  deliver(item) {
    const res = this.waiting.shift();
    if (res) this.sendNext(res, item); else this.queue.push(item);
  }

  sendNext(res, item) {
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Aws-Request-Id': item.id,
      'Lambda-Runtime-Deadline-Ms': String(item.deadline),
      'Lambda-Runtime-Invoked-Function-Arn': item.arn,
      'Lambda-Runtime-Trace-Id': process.env._X_AMZN_TRACE_ID || 'Root=1-00000000-000000000000000000000000',
    });
    res.end(item.body);
  }

  route(req, res) {
    const url = req.url || '';
    if (req.method === 'GET' && url === `${API}/invocation/next`) {
      this.endInvocations();
      const item = this.queue.shift();
      if (item) this.sendNext(res, item); else this.waiting.push(res);
      return;
    }
    const done = req.method === 'POST'
      && url.match(/^\/2018-06-01\/runtime\/invocation\/([^/]+)\/(response|error)$/);
    const initError = req.method === 'POST' && url === `${API}/init/error`;
    const tooLarge = () => {
      const what = !done ? 'init error' : done[2] === 'response' ? 'answer' : 'error report';
      const reason = `edge binary's ${what} is larger than the bridge's cap `
        + `of ${MAX_BODY_BYTES} bytes (MAX_BODY_BYTES)`;
      const call = done && this.take(done[1]);
      // Failed at once, not held: the binary is killed below, so its
      // invocation ends here.
      if (call) call.reject(new Error(reason));
      if (done || initError) this.restart(`restarted after ${reason}`);
    };
    this.readBody(req, tooLarge, (body) => {
      if (done) {
        const call = this.take(done[1]);
        res.writeHead(202, { 'Content-Type': 'application/json' });
        res.end('{"status":"OK"}');
        if (!call) return;
        if (done[2] === 'response') {
          let answer;
          try {
            answer = JSON.parse(body);
          } catch (err) {
            const error = new Error(`edge binary answered with invalid JSON: ${err.message}`);
            this.hold(() => call.reject(error));
            return;
          }
          this.hold(() => call.resolve(answer));
        } else {
          let detail = body;
          try {
            const e = JSON.parse(body);
            detail = `${e.errorType}: ${e.errorMessage}`;
          } catch (_) { /* keep the raw body */ }
          this.hold(() => call.reject(new Error(detail)));
        }
        return;
      }
      if (initError) {
        res.writeHead(202);
        res.end();
        this.restart(`edge binary failed to start: ${body}`);
        return;
      }
      res.writeHead(404);
      res.end();
    });
  }

  // The invocation `id`, no longer waiting for the binary; undefined if it
  // has already ended (timed out, or the binary restarted).
  take(id) {
    const call = this.inflight.get(id);
    if (!call) return undefined;
    this.inflight.delete(id);
    clearTimeout(call.timer);
    return call;
  }

  // Reads a body the binary posts, up to MAX_BODY_BYTES. Past the cap (by
  // Content-Length, or counted as it arrives when the body is chunked) it
  // drops what it holds and destroys the request, so the rest is never
  // read, and tooLarge restarts the binary. Destroyed, not answered 413:
  // closing a connection with its body unread resets it, so a 413 would
  // seldom be read, and lambda_runtime exits on a reset post anyway.
  // Restarting at once, not waiting for that exit, means the next event
  // never goes to a binary on its way out.
  readBody(req, tooLarge, done) {
    let chunks = [];
    let size = 0;
    const refuse = () => {
      chunks = null;
      req.destroy();
      tooLarge();
    };
    if (Number(req.headers['content-length']) > MAX_BODY_BYTES) {
      refuse();
      return;
    }
    req.on('data', (c) => {
      if (!chunks) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) refuse(); else chunks.push(c);
    });
    req.on('end', () => {
      if (chunks) done(Buffer.concat(chunks).toString());
    });
  }

  async close() {
    this.restart('bridge closed');
    if (this.server) {
      await new Promise((resolve) => this.server.close(resolve));
      this.server = null;
    }
  }
}

const bridge = new Bridge();

exports.handler = async (event, context) => bridge.invoke(event, context);
exports.Bridge = Bridge;
exports.MAX_BODY_BYTES = MAX_BODY_BYTES;
