// 16 concurrent streaming chats on the default server (8 sequences generated
// together, the other 8 queued until slots free up): every stream completes
// with done, the right token count, and exactly the text its request produces
// alone (greedy, and a different prompt per client, so lost, mixed or
// interleaved pieces show; server_batch.test.mjs says why batching keeps the
// text).
//
// The prompts stay under 64 tokens on purpose: the server reuses the KV cache
// of whatever request ran before, and ggml-cpu computes attention for a batch
// of 64 or more prompt tokens with another (tiled) kernel than for a shorter
// batch, so a long prompt decoded in full and the same prompt decoded after a
// cached prefix may differ in the last bits (see README, "prompt cache").
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NAME, chatml, hypuraRun, requireSetup, startServer } from './lib.mjs';

requireSetup();
const { Ollama } = await import('ollama');

const CLIENTS = 16;
const N = 48;
let srv;

before(async () => { srv = await startServer(); });
after(async () => {
  const r = await srv.stop();
  assert.equal(r.code, 0, `server exit: ${JSON.stringify(r)}\n${srv.log()}`);
});

const messagesFor = (i) => [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: `Client ${i}: ${i * 7919}, ${['red', 'green', 'blue', 'teal'][i % 4]}.` },
];
const options = { temperature: 0, seed: 3, num_predict: N };

async function streamChat(i) {
  const client = new Ollama({ host: srv.url });
  let text = '', final = null, parts = 0;
  for await (const p of await client.chat({ model: NAME, messages: messagesFor(i), options, stream: true })) {
    assert.equal(final, null, 'nothing after done');
    parts++;
    text += p.message.content;
    if (p.done) final = p;
  }
  return { text, final, parts };
}

test(`${CLIENTS} concurrent streaming chats`, async () => {
  // what each request produces alone (one at a time), and two of them checked against hypura run
  const solo = [];
  for (let i = 0; i < CLIENTS; i++) {
    const r = await new Ollama({ host: srv.url }).chat({ model: NAME, messages: messagesFor(i), options });
    assert.equal(r.done_reason, 'length', `prompt ${i} must not reach end-of-generation within ${N} tokens`);
    assert.equal(r.eval_count, N);
    assert.ok(r.prompt_eval_count < 64, `prompt ${i}: ${r.prompt_eval_count} tokens`);
    solo.push(r.message.content);
  }
  assert.equal(new Set(solo).size, CLIENTS, 'every prompt gives a different text');
  for (const i of [0, CLIENTS - 1]) assert.equal(solo[i], hypuraRun(chatml(messagesFor(i)), N).text);

  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => streamChat(i)));
  const ms = Date.now() - t0;
  results.forEach((r, i) => {
    assert.ok(r.final, `stream ${i} ended with done`);
    assert.equal(r.final.done_reason, 'length');
    assert.equal(r.final.eval_count, N, `stream ${i} token count`);
    assert.ok(r.parts >= 2 && r.parts <= N + 1);
    assert.equal(r.text, solo[i], `stream ${i} text equals its request alone`);
  });
  console.log(`# ${CLIENTS} streams x ${N} tokens in ${ms} ms`);
  // more clients than slots: some request waited in the queue longer than a whole generation takes
  const waits = results.map((r) => r.final.load_duration);
  const gen = Math.min(...results.map((r) => r.final.eval_duration));
  assert.ok(Math.max(...waits) > gen, `queue waits ${waits} vs one generation ${gen} ns`);

  // the server logged every stream as finished
  const finished = await srv.waitLog(/POST \/api\/chat 200 stream: 48 tokens \(length\)/g, CLIENTS);
  assert.equal(finished.length, CLIENTS);
});
