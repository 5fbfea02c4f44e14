// `hypura serve` driven by the official clients: the `ollama` and `openai` npm
// packages. Greedy text must equal what `hypura run` prints for the same
// formatted prompt; counts, reasons and durations must be consistent.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NAME, chatml, hypuraRun, requireSetup, startServer } from './lib.mjs';

requireSetup();
const { Ollama } = await import('ollama');
const { default: OpenAI, NotFoundError, BadRequestError } = await import('openai');

const N = 24;
const SYSTEM = 'You are a terse assistant.';
// srv: the default server (prompt cache on); nocache: --no-prompt-cache.
let srv, nocache, ollama, openai;

before(async () => {
  srv = await startServer();
  nocache = await startServer(['--no-prompt-cache']);
  ollama = new Ollama({ host: srv.url });
  openai = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  for (const s of [srv, nocache]) {
    const r = await s.stop();
    assert.equal(r.code, 0, `server exit: ${JSON.stringify(r)}\n${s.log()}`);
  }
});

// With the prompt cache on, greedy text is compared with `hypura run` only for prompts under
// 64 tokens: ggml-cpu computes attention for a batch of 64+ prompt tokens with another (tiled)
// kernel, so a long prompt decoded after a cached prefix may differ from a full decode in the
// last bits (README, "prompt cache"). Longer prompts are compared on the --no-prompt-cache server.
const short = (ref) => assert.ok(ref.promptTokens < 64, `prompt of ${ref.promptTokens} tokens`);

function checkOllamaFinal(r, ref, n) {
  assert.equal(r.done, true);
  assert.equal(r.done_reason, 'length');
  assert.equal(r.eval_count, n, 'eval_count equals num_predict when nothing stops earlier');
  assert.equal(r.prompt_eval_count, ref.promptTokens);
  for (const k of ['total_duration', 'load_duration', 'prompt_eval_duration', 'eval_duration']) {
    assert.ok(Number.isInteger(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
  }
  assert.ok(r.total_duration >= r.prompt_eval_duration + r.eval_duration, 'total covers prompt + generation');
  assert.ok(r.total_duration < 60e9, 'durations are in nanoseconds');
  assert.match(r.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
}

test('list, show, ps, version', async () => {
  const tags = await ollama.list();
  assert.equal(tags.models.length, 1);
  const m = tags.models[0];
  assert.equal(m.name, NAME);
  assert.equal(m.model, NAME);
  assert.ok(m.size > 1e6);
  assert.match(m.digest, /^[0-9a-f]{64}$/);
  assert.equal(m.details.format, 'gguf');
  assert.equal(m.details.family, 'llama');
  assert.equal(m.details.quantization_level, 'Q8_0');

  const show = await ollama.show({ model: `${NAME}:latest` });
  assert.equal(show.details.family, 'llama');
  assert.equal(show.model_info['llama.block_count'], 2);
  assert.equal(show.model_info['llama.embedding_length'], 256);
  assert.ok(show.model_info['general.parameter_count'] > 1e6);
  assert.deepEqual(show.capabilities, ['completion']);
  assert.equal(show.template, 'chatml');

  const ps = await ollama.ps();
  assert.equal(ps.models[0].name, NAME);
  assert.equal(ps.models[0].size_vram, 0);

  const v = await ollama.version();
  assert.match(v.version, /^\d+\.\d+\.\d+$/);
});

test('generate: non-streaming and streaming equal hypura run', async () => {
  const ref = hypuraRun(chatml([{ role: 'system', content: SYSTEM }, { role: 'user', content: 'Hello there' }]), N);
  assert.equal(ref.genTokens, N, 'the reference does not stop early');
  const opts = { temperature: 0, seed: 42, num_predict: N };

  const r = await ollama.generate({ model: NAME, prompt: 'Hello there', system: SYSTEM, options: opts });
  assert.equal(r.model, NAME);
  short(ref);
  assert.equal(r.response, ref.text);
  checkOllamaFinal(r, ref, N);

  const parts = [];
  for await (const p of await ollama.generate({ model: NAME, prompt: 'Hello there', system: SYSTEM, options: opts,
    stream: true })) parts.push(p);
  const last = parts.at(-1);
  assert.ok(parts.slice(0, -1).every((p) => p.done === false && typeof p.response === 'string'));
  assert.ok(parts.length >= 2 && parts.length <= N + 1, `${parts.length} parts`);
  assert.equal(parts.map((p) => p.response).join(''), ref.text);
  assert.equal(last.response, '');
  checkOllamaFinal(last, ref, N);
  // the prompt was cached by the previous request: only its last token was decoded again
  // (the same text shows that reuse does not change the answer for this prompt)
  const re = new RegExp(`prompt ${ref.promptTokens} tokens \\(${ref.promptTokens - 1} from cache\\)`, 'g');
  assert.equal((await srv.waitLog(re, 1)).length, 1, srv.log());
});

test('generate: raw prompt, and stop strings cut across piece boundaries', async () => {
  const prompt = 'Once upon a time';
  const ref = hypuraRun(prompt, N);
  short(ref);
  const r = await ollama.generate({ model: NAME, prompt, raw: true, options: { temperature: 0, num_predict: N } });
  assert.equal(r.response, ref.text);
  assert.equal(r.eval_count, N);

  // a stop string made of the end of one piece and the start of the next
  const parts = [];
  for await (const p of await ollama.generate({ model: NAME, prompt, raw: true, stream: true,
    options: { temperature: 0, num_predict: N } })) if (!p.done) parts.push(p.response);
  assert.equal(parts.join(''), ref.text);
  const k = parts.findIndex((p, i) => i >= 3 && p.length >= 2 && parts[i + 1]?.length >= 2);
  assert.ok(k > 0, `pieces: ${JSON.stringify(parts)}`);
  const stop = parts[k].slice(-2) + parts[k + 1].slice(0, 2);
  const cut = ref.text.indexOf(stop);
  for (const stream of [false, true]) {
    let text = '', final;
    const req = { model: NAME, prompt, raw: true, options: { temperature: 0, num_predict: N, stop: [stop, 'zzzzqqq'] } };
    if (stream) {
      for await (const p of await ollama.generate({ ...req, stream: true })) { text += p.response; final = p; }
    } else {
      final = await ollama.generate(req);
      text = final.response;
    }
    assert.equal(text, ref.text.slice(0, cut), `stop ${JSON.stringify(stop)} (stream ${stream})`);
    assert.equal(final.done_reason, 'stop');
    assert.ok(final.eval_count < N && final.eval_count >= k + 2, `eval_count ${final.eval_count}`);
  }
});

test('chat: system prompt and two turns, streaming and not', async () => {
  const first = [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'What is a GGUF file?' }];
  const ref1 = hypuraRun(chatml(first), N);
  short(ref1);
  const opts = { temperature: 0, seed: 7, num_predict: N };
  const r1 = await ollama.chat({ model: NAME, messages: first, options: opts });
  assert.equal(r1.message.role, 'assistant');
  assert.equal(r1.message.content, ref1.text);
  checkOllamaFinal(r1, ref1, N);

  // the second turn carries the first answer: over 64 tokens, so the exact comparison runs on
  // the server without prompt cache; the default server reuses the first turn's tokens
  const second = [...first, { role: 'assistant', content: r1.message.content }, { role: 'user', content: 'And why?' }];
  const ref2 = hypuraRun(chatml(second), N);
  const r2 = await ollama.chat({ model: NAME, messages: second, options: opts });
  checkOllamaFinal(r2, ref2, N);
  const reused = await srv.waitLog(new RegExp(`prompt ${ref2.promptTokens} tokens \\((\\d+) from cache\\)`), 1);
  assert.ok(Number(reused[1]) > ref1.promptTokens, `reused ${reused[1]} tokens: the first turn's prompt and answer`);

  const exact = new Ollama({ host: nocache.url });
  const r3 = await exact.chat({ model: NAME, messages: second, options: opts });
  assert.equal(r3.message.content, ref2.text);
  checkOllamaFinal(r3, ref2, N);
  let text = '', last;
  for await (const p of await exact.chat({ model: NAME, messages: second, options: opts, stream: true })) {
    assert.equal(p.message.role, 'assistant');
    text += p.message.content;
    last = p;
  }
  assert.equal(text, ref2.text);
  checkOllamaFinal(last, ref2, N);

  // streaming on the default server: same shape, same count
  text = '';
  for await (const p of await ollama.chat({ model: NAME, messages: first, options: opts, stream: true })) {
    text += p.message.content;
    last = p;
  }
  assert.equal(text, ref1.text);
  checkOllamaFinal(last, ref1, N);
});

test('--no-prompt-cache: a long prompt equals hypura run whatever ran before', async () => {
  const client = new Ollama({ host: nocache.url });
  const long = (k) => [{ role: 'system', content: SYSTEM },
    { role: 'user', content: `${k} ${'Tell me everything about rivers, lakes and seas. '.repeat(6)}` }];
  const ref = hypuraRun(chatml(long('first')), N);
  assert.ok(ref.promptTokens >= 64, `${ref.promptTokens} prompt tokens`);
  await client.chat({ model: NAME, messages: long('second'), options: { temperature: 0, num_predict: 8 } });
  const r = await client.chat({ model: NAME, messages: long('first'), options: { temperature: 0, num_predict: N } });
  assert.equal(r.message.content, ref.text);
  assert.equal(r.prompt_eval_count, ref.promptTokens);
  assert.equal((await nocache.waitLog(/\(0 from cache\)/g, 4)).length, 4, nocache.log());
  assert.doesNotMatch(nocache.log(), /\([1-9]\d* from cache\)/);
});

test('ollama client errors: unknown model is 404', async () => {
  await assert.rejects(ollama.chat({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status_code === 404 && e.error === "model 'nope' not found");
  await assert.rejects(ollama.show({ model: 'nope' }), (e) => e.status_code === 404);
  await assert.rejects(ollama.embed({ model: NAME, input: 'hi' }),
    (e) => e.status_code === 501 && /does not support embeddings/.test(e.error));
});

test('openai: models, chat (streaming and not), completions', async () => {
  const models = await openai.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [NAME]);
  const one = await openai.models.retrieve(NAME);
  assert.equal(one.id, NAME);

  const messages = [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'Name three rivers.' }];
  const ref = hypuraRun(chatml(messages), N);
  short(ref);
  const c = await openai.chat.completions.create({ model: NAME, messages, temperature: 0, seed: 1, max_tokens: N });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.model, NAME);
  assert.equal(c.choices.length, 1);
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.equal(c.choices[0].message.content, ref.text);
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.deepEqual(c.usage, { prompt_tokens: ref.promptTokens, completion_tokens: N, total_tokens: ref.promptTokens + N });

  const stream = await openai.chat.completions.create({ model: NAME, messages, temperature: 0, max_tokens: N,
    stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0, role = null, id = null;
  for await (const ch of stream) {
    chunks++;
    assert.equal(ch.object, 'chat.completion.chunk');
    id ??= ch.id;
    assert.equal(ch.id, id, 'one id for the whole stream');
    if (ch.usage) usage = ch.usage;
    for (const choice of ch.choices) {
      if (choice.delta.role) role = choice.delta.role;
      if (choice.delta.content) text += choice.delta.content;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, ref.text);
  assert.equal(finish, 'length');
  assert.ok(chunks >= 3);
  assert.deepEqual(usage, { prompt_tokens: ref.promptTokens, completion_tokens: N, total_tokens: ref.promptTokens + N });

  const prompt = 'The capital of France is';
  const refc = hypuraRun(prompt, 12);
  short(refc);
  const comp = await openai.completions.create({ model: NAME, prompt, temperature: 0, max_tokens: 12 });
  assert.equal(comp.object, 'text_completion');
  assert.equal(comp.choices[0].text, refc.text);
  assert.equal(comp.choices[0].finish_reason, 'length');
  assert.equal(comp.usage.completion_tokens, 12);
  assert.equal(comp.usage.prompt_tokens, refc.promptTokens);

  let ctext = '', cfinish = null;
  for await (const ch of await openai.completions.create({ model: NAME, prompt, temperature: 0, max_tokens: 12,
    stream: true })) {
    ctext += ch.choices[0]?.text ?? '';
    cfinish = ch.choices[0]?.finish_reason ?? cfinish;
  }
  assert.equal(ctext, refc.text);
  assert.equal(cfinish, 'length');
});

test('openai client errors', async () => {
  await assert.rejects(openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e instanceof NotFoundError && /model 'gpt-4o' not found/.test(e.message));
  await assert.rejects(openai.chat.completions.create({ model: NAME, messages: [] }),
    (e) => e instanceof BadRequestError && /must not be empty/.test(e.message));
  await assert.rejects(openai.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'hi' }], n: 2 }),
    (e) => e instanceof BadRequestError && /n=1/.test(e.message));
});
