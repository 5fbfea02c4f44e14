// Continuous batching: up to --parallel requests are generated together, one
// decode step for all of them (engine/hy_batch.h). Driven by the official
// clients: 8 concurrent streams, 4 through the `ollama` package and 4 through
// the `openai` package, each with its own sampling (greedy, or temperature
// with its own seed), token limit and stop strings.
//
// Identity: a batched request gives the text it gives alone, bit for bit in
// the logits. One decode step computes a sequence's rows the same whatever
// else is in the step (matmuls are per row; a step beside generating
// sequences stays under ggml-cpu's 64-row flash-attention tile). What could
// differ is the attention sum: flash attention adds a query's keys in KV-cache
// *cell* order, and in the one cache all sequences share libllama puts new
// tokens into the first free cells, so cells freed while a request runs would
// put its later tokens below its earlier ones. The batcher never frees cells
// under running requests (they pass to a holding sequence until the batch is
// idle), and a lone one-row step gets a throwaway second row so that it does
// not take ggml-cpu's split-KV attention (one query row over 512+ cells) when
// alone it would not. What can still differ, and is measured here: the
// holding sequence freed for room while requests run (a full cache), and
// prompts of 64+ tokens read beside generating requests (per-row instead of
// tiled attention). The tiny random model has near-ties everywhere, so any
// low-bit change would show as another greedy token.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BIN, MODEL, NAME, request, requireSetup, startServer } from './lib.mjs';

requireSetup();
const { Ollama } = await import('ollama');
const { default: OpenAI } = await import('openai');

const N = 40;
let srv, cached;

before(async () => {
  srv = await startServer(['--parallel', '8', '--no-prompt-cache']);
  cached = await startServer(['--parallel', '8']);
});
after(async () => {
  for (const s of [srv, cached]) {
    const r = await s.stop();
    assert.equal(r.code, 0, `server exit: ${JSON.stringify(r)}\n${s.log()}`);
  }
});

const messagesFor = (i) => [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: `Client ${i}: ${i * 7919}, ${['red', 'green', 'blue', 'teal'][i % 4]}.` },
];

// request i of a round: even ones through ollama, odd ones through openai
async function one(url, i, { stream = true, n = N, temperature = 0, seed = 3, stop } = {}) {
  if (i % 2 === 0) {
    const client = new Ollama({ host: url });
    const options = { temperature, seed, num_predict: n, ...(stop ? { stop } : {}) };
    if (!stream) {
      const r = await client.chat({ model: NAME, messages: messagesFor(i), options });
      return { text: r.message.content, count: r.eval_count, reason: r.done_reason };
    }
    let text = '', final = null;
    for await (const p of await client.chat({ model: NAME, messages: messagesFor(i), options, stream: true })) {
      assert.equal(final, null, 'nothing after done');
      text += p.message.content;
      if (p.done) final = p;
    }
    assert.ok(final, `ollama stream ${i} ended with done`);
    return { text, count: final.eval_count, reason: final.done_reason };
  }
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const req = { model: NAME, messages: messagesFor(i), temperature, seed, max_tokens: n, ...(stop ? { stop } : {}) };
  if (!stream) {
    const c = await client.chat.completions.create(req);
    return { text: c.choices[0].message.content, count: c.usage.completion_tokens, reason: c.choices[0].finish_reason };
  }
  let text = '', reason = null, usage = null;
  for await (const ch of await client.chat.completions.create({ ...req, stream: true,
    stream_options: { include_usage: true } })) {
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) reason = c.finish_reason;
    }
  }
  assert.ok(usage, `openai stream ${i} reported usage`);
  return { text, count: usage.completion_tokens, reason };
}

// the highest "(k busy)" in the request log: how many slots were busy when a request joined
const maxBusy = (log) => Math.max(0, ...[...log.matchAll(/slot \d+ of 8 \((\d+) busy\)/g)].map((m) => Number(m[1])));

test('8 concurrent streams (ollama and openai clients) are generated together, each as alone', async () => {
  // long enough that the 8 streams overlap also when the clients start them slowly (a loaded
  // machine started them ~30 ms apart, and 40 tokens of this model take about that)
  const NB = 4 * N;
  const solo = [];
  for (let i = 0; i < 8; i++) solo.push(await one(srv.url, i, { stream: false, n: NB }));
  solo.forEach((r, i) => {
    assert.equal(r.count, NB, `request ${i} alone`);
    assert.equal(r.reason, 'length');
  });
  assert.equal(new Set(solo.map((r) => r.text)).size, 8, 'every prompt gives a different text');
  assert.equal(maxBusy(srv.log()), 1, 'one at a time so far');

  // while the 8 streams run, /api/ps shows the slots in use
  let ps = null;
  const watch = (async () => {
    for (let k = 0; k < 200 && !ps; k++) {
      const r = await request(srv.url, 'GET', '/api/ps');
      if (r.json.models[0].parallel.busy >= 2) ps = r.json.models[0];
      else await new Promise((res) => setTimeout(res, 5));
    }
  })();
  const t0 = Date.now();
  const batched = await Promise.all(Array.from({ length: 8 }, (_, i) => one(srv.url, i, { n: NB })));
  const ms = Date.now() - t0;
  await watch;
  batched.forEach((r, i) => {
    assert.equal(r.count, NB, `stream ${i} token count`);
    assert.equal(r.reason, 'length');
  });
  assert.ok(ps, '/api/ps showed at least two busy slots during the streams');
  assert.equal(ps.parallel.slots, 8);
  assert.equal(ps.parallel.context_total, 4096);
  assert.equal(ps.context_length, 512, 'a request holds its share: 4096 / 8');
  assert.equal(ps.parallel.slot.length, 8);
  assert.ok(ps.parallel.slot.filter((s) => s.state !== 'idle').length >= 2, JSON.stringify(ps.parallel));
  // they ran together: some request joined with others busy
  const busy = maxBusy(srv.log());
  assert.ok(busy >= 4, `at most ${busy} slots were busy when a request joined:\n${srv.log()}`);
  const differ = batched.map((r, i) => (r.text === solo[i].text ? -1 : i)).filter((i) => i >= 0);
  console.log(`# 8 streams x ${NB} tokens in ${ms} ms (up to ${busy} slots busy at once); ` +
    `batched vs alone, no prompt cache: ${differ.length} of 8 differ ${JSON.stringify(differ)}`);
  assert.deepEqual(differ, [], 'batched responses equal the same requests alone');
});

test('the rate of batched responses that differ from alone, with churn and with the prompt cache', async () => {
  // 16 requests on 8 slots (half queue and join as others leave), two rounds on each server
  for (const [name, s] of [['no prompt cache', srv], ['prompt cache', cached]]) {
    const solo = [];
    for (let i = 0; i < 16; i++) solo.push((await one(s.url, i, { stream: false })).text);
    let differ = 0, total = 0;
    for (let round = 0; round < 2; round++) {
      const batched = await Promise.all(Array.from({ length: 16 }, (_, i) => one(s.url, i)));
      batched.forEach((r, i) => {
        assert.equal(r.count, N, `${name}: stream ${i} complete`);
        total++;
        if (r.text !== solo[i]) differ++;
      });
    }
    console.log(`# ${name}: ${differ} of ${total} batched responses differ from the same request alone`);
    assert.ok(differ * 8 <= total, `${name}: ${differ} of ${total} differ`);
  }
});

test('sampling, limits and stop strings stay per request', async () => {
  // alone: a sampled request (its own seed), a short one, and a stop string cut from a greedy text
  const hot = { temperature: 0.9, seed: 1234 };
  const hotSolo = await one(srv.url, 2, { stream: false, ...hot });
  const shortSolo = await one(srv.url, 3, { stream: false, n: 5 });
  const greedy = await one(srv.url, 4, { stream: false });
  const stop = greedy.text.slice(10, 14);
  assert.ok(stop.trim().length >= 2, `stop string ${JSON.stringify(stop)}`);
  const cut = greedy.text.indexOf(stop);
  // together, with others greedy
  const [hotB, shortB, stopB, a, b] = await Promise.all([
    one(srv.url, 2, hot), one(srv.url, 3, { n: 5 }), one(srv.url, 4, { stop: [stop] }), one(srv.url, 5), one(srv.url, 6),
  ]);
  assert.equal(hotB.count, N);
  assert.notEqual(hotSolo.text, greedy.text);
  assert.equal(hotB.text, hotSolo.text, 'a sampled request keeps its own seed and temperature in the batch');
  assert.equal(shortB.count, 5);
  assert.equal(shortB.text, shortSolo.text);
  assert.equal(stopB.text, greedy.text.slice(0, cut), 'cut at its stop string');
  assert.equal(stopB.reason, 'stop');
  assert.equal(a.count, N);
  assert.equal(b.count, N);
});

test('num_ctx is honoured up to a request\'s share of --ctx', async () => {
  const gen = (options, prompt = 'Once upon a time') => request(srv.url, 'POST', '/api/generate',
    { model: NAME, prompt, raw: true, stream: false, options: { temperature: 0, ...options } });
  let r = await gen({ num_ctx: 24, num_predict: 1000 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.prompt_eval_count + r.json.eval_count, 24, 'prompt + generated = num_ctx');
  r = await gen({ num_ctx: 100000, num_predict: 2000 });
  assert.equal(r.json.prompt_eval_count + r.json.eval_count, 512, 'capped at the share');
  r = await gen({ num_ctx: 8 }, 'word '.repeat(20));
  assert.equal(r.status, 400);
  assert.match(r.json.error, /the context holds 8 \(the request's num_ctx\)/);
  r = await gen({}, 'word '.repeat(600));
  assert.equal(r.status, 400);
  assert.match(r.json.error, /the context holds 512 \(a request's share of the server's 4096 over 8 sequences/);
});

test('a client that leaves mid-stream frees its slot; the others go on', async () => {
  const client = new Ollama({ host: srv.url });
  const others = Array.from({ length: 3 }, (_, i) => one(srv.url, i * 2, { n: 200 }));
  const stream = await client.generate({ model: NAME, prompt: 'Once upon a time', raw: true, stream: true,
    options: { temperature: 0, num_predict: 5000 } });
  let chunks = 0;
  await assert.rejects((async () => {
    for await (const part of stream) if (++chunks === 3) { assert.equal(part.done, false); stream.abort(); }
  })(), (e) => e.name === 'AbortError');
  for (const r of await Promise.all(others)) assert.equal(r.count, 200);
  await srv.waitLog(/stream: cancelled \(the client went away\)/g, 1);
  const ps = (await request(srv.url, 'GET', '/api/ps')).json.models[0].parallel;
  assert.equal(ps.busy, 0, JSON.stringify(ps));
  assert.ok(ps.slot.every((s) => s.state === 'idle' && s.tokens === 0), 'no prompt cache: every slot empty');
});

test('a memory budget that cannot hold --parallel sequences lowers them and says so', async () => {
  // with -b 1 the compute buffer grows with the sequences (a step is a batch of n + 1 tokens):
  // a budget between what 1 and what 8 sequences need keeps the model resident with fewer
  const used = (b) => JSON.parse(spawnSync(join(BIN, 'hypura'), ['estimate', MODEL, '-b', String(b), '--json'],
    { encoding: 'utf8' }).stdout).budget_used;
  const budget = Math.floor((used(1) + used(9)) / 2);
  const s = await startServer(['-b', '1', '--memory-budget', String(budget)]);
  try {
    const m = s.log().match(/the memory budget cannot hold 8 sequences \((.*)\); serving (\d+) at once/);
    assert.ok(m, s.log());
    const n = Number(m[2]);
    assert.ok(n >= 2 && n < 8, `serving ${n}`);
    assert.match(s.log(), /plan: full-resident/);
    assert.match(s.log(), new RegExp(`${n} sequences at once`));
    const ps = (await request(s.url, 'GET', '/api/ps')).json.models[0].parallel;
    assert.equal(ps.slots, n);
    const rs = await Promise.all(Array.from({ length: n + 2 }, (_, i) => one(s.url, i, { n: 8 })));
    for (const r of rs) assert.equal(r.count, 8);
  } finally {
    const r = await s.stop();
    assert.equal(r.code, 0, s.log());
  }
});
