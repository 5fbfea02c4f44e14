// Raw HTTP against `hypura serve`: every bad input gets the right 4xx status
// and a JSON error, and the server keeps answering after each one.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { NAME, ndjson, request, requireSetup, startServer } from './lib.mjs';

requireSetup();

const MAX_BODY = 64 * 1024;
const MAX_TOKENS = 10;
let srv;

before(async () => {
  srv = await startServer(['--ctx', '256', '--max-body', String(MAX_BODY), '--max-tokens', String(MAX_TOKENS)]);
});

after(async () => {
  const r = await srv.stop();
  assert.equal(r.code, 0, `server exit: ${JSON.stringify(r)}\n${srv.log()}`);
});

async function stillServing() {
  const r = await request(srv.url, 'GET', '/api/version');
  assert.equal(r.status, 200);
  assert.ok(r.json.version);
}

// Ollama routes answer {"error": "..."}; OpenAI routes {"error": {"message": "..."}}
async function expectError(method, path, body, status, pattern, headers) {
  const r = await request(srv.url, method, path, body, headers);
  assert.equal(r.status, status, `${method} ${path} ${String(body).slice(0, 80)} -> ${r.status} ${r.text}`);
  assert.match(r.headers['content-type'], /^application\/json/);
  const msg = path.startsWith('/v1/') ? r.json?.error?.message : r.json?.error;
  assert.equal(typeof msg, 'string', `JSON error body: ${r.text}`);
  if (pattern) assert.match(msg, pattern);
  await stillServing();
  return r;
}

const user = [{ role: 'user', content: 'hi' }];

test('malformed and mistyped JSON is 400', async () => {
  for (const path of ['/api/generate', '/api/chat', '/api/show', '/v1/chat/completions', '/v1/completions']) {
    await expectError('POST', path, '{"model": "tiny",', 400, /invalid JSON/);
    await expectError('POST', path, '[1, 2]', 400, /must be a JSON object/);
    await expectError('POST', path, '', 400, /empty/);
    await expectError('POST', path, '{"model": 12}', 400, /'model' must be a string/);
    await expectError('POST', path, '{}', 400, /'model' is required/);
  }
  await expectError('POST', '/api/chat', '{"model":"tiny","messages":[{"role":"user","content":"\\u00"}]}', 400,
    /invalid JSON/);
  const cases = [
    ['/api/chat', { model: NAME, messages: 'hi' }, /'messages' must be an array/],
    ['/api/chat', { model: NAME, messages: [] }, /must not be empty/],
    ['/api/chat', { model: NAME }, /'messages' is required/],
    ['/api/chat', { model: NAME, messages: [{ role: 'user', content: 5 }] }, /content must be a string/],
    ['/api/chat', { model: NAME, messages: [{ role: 'wizard', content: 'x' }] }, /role must be one of/],
    ['/api/chat', { model: NAME, messages: ['hi'] }, /must be an object/],
    ['/api/chat', { model: NAME, messages: user, stream: 'yes' }, /'stream' must be a boolean/],
    ['/api/chat', { model: NAME, messages: user, options: 3 }, /'options' must be an object/],
    ['/api/chat', { model: NAME, messages: user, options: { temperature: 'hot' } }, /'temperature' must be a number/],
    ['/api/chat', { model: NAME, messages: user, options: { temperature: -1 } }, /'temperature' must be between/],
    ['/api/chat', { model: NAME, messages: user, options: { top_k: 1.5 } }, /'top_k' must be an integer/],
    ['/api/chat', { model: NAME, messages: user, options: { num_predict: 'many' } }, /'num_predict' must be an integer/],
    ['/api/chat', { model: NAME, messages: user, options: { stop: 5 } }, /'stop' must be a string or an array/],
    ['/api/chat', { model: NAME, messages: user, options: { stop: ['a', 1] } }, /'stop' must be a string or an array/],
    ['/api/chat', { model: NAME, messages: [{ role: 'user', content: 'x', images: ['aGk='] }] }, /images/],
    ['/api/generate', { model: NAME, prompt: 7 }, /'prompt' must be a string/],
    ['/api/generate', { model: NAME, prompt: 'hi', system: [] }, /'system' must be a string/],
    ['/api/generate', { model: NAME, prompt: 'hi', raw: 1 }, /'raw' must be a boolean/],
    ['/v1/chat/completions', { model: NAME, messages: [] }, /must not be empty/],
    ['/v1/chat/completions', { model: NAME, messages: user, temperature: 'hot' }, /'temperature' must be a number/],
    ['/v1/chat/completions', { model: NAME, messages: user, temperature: 3 }, /'temperature' must be between/],
    ['/v1/chat/completions', { model: NAME, messages: user, max_tokens: -5 }, /'max_tokens' must be between/],
    ['/v1/chat/completions', { model: NAME, messages: user, n: 3 }, /n=1/],
    ['/v1/chat/completions', { model: NAME, messages: user, stream_options: 1 }, /'stream_options' must be an object/],
    ['/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: [{ type: 'image_url' }] }] },
      /only text parts/],
    ['/v1/completions', { model: NAME }, /'prompt' is required/],
    ['/v1/completions', { model: NAME, prompt: [1, 2, 3] }, /'prompt' must be a string/],
  ];
  for (const [path, body, pattern] of cases) await expectError('POST', path, body, 400, pattern);
});

test('unknown model is 404 on every route that names one', async () => {
  for (const [path, body] of [
    ['/api/generate', { model: 'nope', prompt: 'hi' }],
    ['/api/chat', { model: 'nope', messages: user }],
    ['/api/show', { model: 'nope' }],
    ['/api/show', { name: 'tiny:v2' }],
    ['/api/embed', { model: 'nope', input: 'hi' }],
    ['/v1/chat/completions', { model: 'nope', messages: user }],
    ['/v1/completions', { model: 'nope', prompt: 'hi' }],
  ]) {
    const r = await expectError('POST', path, body, 404, /not found/);
    if (!path.startsWith('/v1/')) assert.equal(r.json.error, `model '${body.model ?? body.name}' not found`);
  }
  await expectError('GET', '/v1/models/nope', undefined, 404, /model 'nope' not found/);
  const ok = await request(srv.url, 'GET', `/v1/models/${NAME}:latest`);
  assert.equal(ok.status, 200);
});

test('routes: unknown is 404, wrong method is 405 with Allow, HEAD works', async () => {
  await expectError('GET', '/api/nothing', undefined, 404, /not found/);
  await expectError('GET', '/v2/chat', undefined, 404, /not found/);
  let r = await expectError('GET', '/api/chat', undefined, 405, /not allowed/);
  assert.equal(r.headers.allow, 'POST');
  r = await expectError('POST', '/api/tags', '{}', 405, /not allowed/);
  assert.equal(r.headers.allow, 'GET, HEAD');
  r = await expectError('DELETE', '/v1/models', undefined, 405, /not allowed/);
  const head = await request(srv.url, 'HEAD', '/');
  assert.equal(head.status, 200);
  const root = await request(srv.url, 'GET', '/');
  assert.equal(root.text, 'Ollama is running');
  await expectError('POST', '/api/pull', { model: 'llama3' }, 501, /does not manage models/);
});

test('embeddings: a clear 501', async () => {
  await expectError('POST', '/api/embed', { model: NAME, input: 'hi' }, 501, /does not support embeddings/);
  await expectError('POST', '/api/embeddings', { model: NAME, prompt: 'hi' }, 501, /does not support embeddings/);
  await expectError('POST', '/v1/embeddings', { model: NAME, input: 'hi' }, 501, /does not support embeddings/);
});

test('oversize bodies are 413 (with a length, chunked, and Expect: 100-continue)', async () => {
  const big = JSON.stringify({ model: NAME, prompt: 'x'.repeat(MAX_BODY) });
  await expectError('POST', '/api/generate', big, 413, /exceeds the limit of 65536 bytes/);
  await expectError('POST', '/api/generate', big, 413, /exceeds the limit/, { 'transfer-encoding': 'chunked' });
  await expectError('POST', '/v1/completions', big, 413, /exceeds the limit/);
  // a client that waits for 100 Continue is told at once and never sends the body
  const answer = await new Promise((resolve, reject) => {
    const u = new URL(srv.url);
    const sock = net.connect(Number(u.port), u.hostname, () => {
      sock.write(`POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${10 * MAX_BODY}\r\nExpect: 100-continue\r\n\r\n`);
    });
    let got = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no answer: ${got}`)); }, 5000);
    sock.on('data', (d) => {
      got += d;
      if (got.includes('}')) { clearTimeout(timer); sock.destroy(); resolve(got); }
    });
    sock.on('error', reject);
  });
  assert.match(answer, /^HTTP\/1\.1 413/);
  await stillServing();
  // just under the limit is accepted (and then refused for its length in tokens, not bytes)
  const fits = JSON.stringify({ model: NAME, prompt: 'word '.repeat(Math.floor((MAX_BODY - 100) / 5)) });
  assert.ok(fits.length < MAX_BODY);
  await expectError('POST', '/api/generate', fits, 400, /context holds 256/);
});

test('limits: prompt longer than the context is 400, tokens capped by --max-tokens', async () => {
  await expectError('POST', '/api/generate', { model: NAME, prompt: 'word '.repeat(400), raw: true }, 400,
    /the prompt is \d+ tokens; the context holds 256/);
  for (const stream of [false, true]) {
    const r = await request(srv.url, 'POST', '/api/generate',
      { model: NAME, prompt: 'Once upon a time', raw: true, stream, options: { temperature: 0, num_predict: 1000 } });
    assert.equal(r.status, 200);
    const final = stream ? ndjson(r.text).at(-1) : r.json;
    assert.equal(final.eval_count, MAX_TOKENS);
    assert.equal(final.done_reason, 'length');
  }
  // num_predict -1 (until the end) is capped the same way; num_predict 0 generates nothing
  let r = await request(srv.url, 'POST', '/api/generate',
    { model: NAME, prompt: 'Once upon a time', stream: false, options: { num_predict: -1 } });
  assert.equal(r.json.eval_count, MAX_TOKENS);
  r = await request(srv.url, 'POST', '/api/generate',
    { model: NAME, prompt: 'Once upon a time', stream: false, options: { num_predict: 0 } });
  assert.equal(r.json.eval_count, 0);
  assert.equal(r.json.response, '');
  // the context caps it too: a prompt that leaves 6 tokens of room generates at most 6
  const words = 'a '.repeat(240);
  r = await request(srv.url, 'POST', '/v1/completions', { model: NAME, prompt: words, max_tokens: 9, temperature: 0 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.usage.completion_tokens, Math.min(9, 256 - r.json.usage.prompt_tokens));
  assert.ok(r.json.usage.prompt_tokens + r.json.usage.completion_tokens <= 256);
});

test('an empty generate prompt loads the model (Ollama behaviour)', async () => {
  const r = await request(srv.url, 'POST', '/api/generate', { model: NAME });
  assert.equal(r.status, 200);
  assert.equal(r.json.done, true);
  assert.equal(r.json.done_reason, 'load');
});

test('garbage on the socket does not stop the server', async () => {
  await new Promise((resolve) => {
    const u = new URL(srv.url);
    const sock = net.connect(Number(u.port), u.hostname, () => sock.write('NOT HTTP AT ALL\r\n\r\n\x00\xff'));
    const timer = setTimeout(() => sock.destroy(), 2000);
    sock.on('data', () => {});
    sock.on('close', () => { clearTimeout(timer); resolve(); });
    sock.on('error', () => {});
  });
  await stillServing();
});
