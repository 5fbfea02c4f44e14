// Cancellation and shutdown: a client that goes away (mid-stream, while
// queued, or waiting for a non-streaming answer) stops its generation, so
// the next request is answered at once; SIGTERM/SIGINT stop the server
// promptly with exit status 0, even in the middle of a long generation.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import { NAME, request, requireSetup, startServer } from './lib.mjs';

requireSetup();
const { Ollama } = await import('ollama');

const LONG = 16000; // tokens: seconds on the tiny model (its context is 16384)
// one sequence at a time, so that a second request really waits in the queue
// (server_batch.test.mjs cancels a stream among batched ones)
const ARGS = ['--ctx', '16384', '--max-tokens', '16384', '--parallel', '1'];
const longBody = (stream) => ({ model: NAME, prompt: 'Once upon a time', raw: true, stream,
  options: { temperature: 0, num_predict: LONG } });

// A raw streaming request: resolves `first` at the first NDJSON line; `end` when the response ends.
function openStream(url, body) {
  const u = new URL('/api/generate', url);
  const data = JSON.stringify(body);
  let text = '', status = 0, gotFirst;
  const first = new Promise((r) => { gotFirst = r; });
  let req;
  const end = new Promise((resolve) => {
    req = http.request({ hostname: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      status = res.statusCode;
      res.on('data', (c) => { text += c; if (text.includes('\n')) gotFirst(); });
      res.on('end', () => { gotFirst(); resolve({ status, text, complete: true }); });
      res.on('error', () => resolve({ status, text, complete: false }));
      res.on('close', () => resolve({ status, text, complete: false }));
    });
    req.on('error', () => { gotFirst(); resolve({ status, text, complete: false }); });
    req.end(data);
  });
  return { first, end, destroy: () => req.destroy(), text: () => text };
}

// tokens per second of the tiny model here, to know how long LONG tokens would take
async function longSeconds(url) {
  const r = await request(url, 'POST', '/api/generate',
    { model: NAME, prompt: 'Once upon a time', raw: true, stream: false, options: { temperature: 0, num_predict: 128 } });
  assert.equal(r.status, 200);
  return (LONG / r.json.eval_count) * (r.json.eval_duration / 1e9);
}

async function timeShort(url) {
  const t0 = Date.now();
  const r = await request(url, 'POST', '/api/generate',
    { model: NAME, prompt: 'Hello', raw: true, stream: false, options: { temperature: 0, num_predict: 8 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.eval_count, 8);
  return Date.now() - t0;
}

test('client disconnects cancel their generation', async () => {
  const srv = await startServer(ARGS);
  try {
    const full = await longSeconds(srv.url);
    assert.ok(full > 2, `a ${LONG}-token generation should take seconds here, estimated ${full.toFixed(1)} s`);
    const limitMs = Math.min(2000, (full * 1000) / 4);

    // 1. the official client aborts after the first chunk of a long stream
    const ollama = new Ollama({ host: srv.url });
    const stream = await ollama.generate({ ...longBody(true) });
    let chunks = 0;
    await assert.rejects((async () => {
      for await (const part of stream) {
        assert.equal(part.done, false);
        if (++chunks === 1) stream.abort();
      }
    })(), (e) => e.name === 'AbortError');
    let ms = await timeShort(srv.url);
    assert.ok(ms < limitMs, `next request answered in ${ms} ms (full generation ~${full.toFixed(1)} s)`);
    await srv.waitLog(/stream: cancelled \(the client went away\)/g, 1);
    assert.match(srv.log(), /POST \/api\/generate 200 stream: cancelled \(the client went away\)/);

    // 2. one client streams, a second waits in the queue and leaves, then the first leaves too
    const a = openStream(srv.url, longBody(true));
    await a.first;
    const b = openStream(srv.url, longBody(true));
    await new Promise((r) => setTimeout(r, 300));
    b.destroy();
    await srv.waitLog(/dropped: the client went away while queued/g, 1);
    a.destroy();
    ms = await timeShort(srv.url);
    assert.ok(ms < limitMs, `after the queued and the streaming client left: ${ms} ms`);
    assert.equal((srv.log().match(/stream: cancelled \(the client went away\)/g) ?? []).length, 2);

    // 3. a non-streaming request whose client gives up
    const c = openStream(srv.url, longBody(false));
    await new Promise((r) => setTimeout(r, 300));
    c.destroy();
    await srv.waitLog(/cancelled: the client went away/g, 1);
    ms = await timeShort(srv.url);
    assert.ok(ms < limitMs, `after the non-streaming client left: ${ms} ms`);
  } finally {
    const r = await srv.stop();
    assert.equal(r.code, 0, srv.log());
  }
});

test('SIGTERM during a long generation: answers what is pending, exits 0 promptly', async () => {
  const srv = await startServer(ARGS);
  const a = openStream(srv.url, longBody(true));
  await a.first;
  const queued = request(srv.url, 'POST', '/api/generate', longBody(false));
  await new Promise((r) => setTimeout(r, 200));
  const r = await srv.stop('SIGTERM');
  assert.equal(r.code, 0, srv.log());
  assert.ok(r.ms < 4000, `exit took ${r.ms} ms`);
  // the stream was cut short with Ollama's error line; the queued request got 503
  const sa = await a.end;
  const lines = sa.text.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(lines.length < LONG / 2);
  assert.equal(lines.at(-1).error, 'the server is shutting down', sa.text.slice(-200));
  const q = await queued.catch((e) => ({ status: 0, error: e }));
  assert.equal(q.status, 503, JSON.stringify(q));
  assert.match(q.json.error, /shutting down/);
  assert.match(srv.log(), /Terminated: shutting down/);
  // nothing listens any more
  const u = new URL(srv.url);
  await assert.rejects(new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname, () => { s.destroy(); resolve(); });
    s.on('error', reject);
  }), /ECONNREFUSED/);
});

test('SIGINT on an idle server exits 0', async () => {
  const srv = await startServer();
  assert.equal((await request(srv.url, 'GET', '/')).status, 200);
  const r = await srv.stop('SIGINT');
  assert.equal(r.code, 0, srv.log());
  assert.ok(r.ms < 2000, `exit took ${r.ms} ms`);
});
