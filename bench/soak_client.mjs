// Soak clients for bench/soak.sh: N concurrent streaming clients (the official
// `ollama` npm client from tests/node) loop over a few prompts until the
// deadline. Every response must end with done: true and give exactly the text
// `hypura run` gave for that prompt (greedy): anything else counts as an error
// (an exception, an {"error"} line) or as incomplete (no done: true, or other
// text). Prints one JSON object on stdout.
// usage: node soak_client.mjs URL MODEL CLIENTS SECONDS NUM_PREDICT REFS.json
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';

const [url, model, clients, seconds, numPredict, refsPath] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const { Ollama } = await import(pathToFileURL(join(here, '..', 'tests', 'node', 'node_modules', 'ollama', 'dist', 'index.mjs')));
const refs = JSON.parse(readFileSync(refsPath, 'utf8')); // [{prompt, text}]
const deadline = Date.now() + Number(seconds) * 1000;
const st = { requests: 0, completed: 0, errors: 0, incomplete: 0, tokens: 0, latency_ms: [], first_piece_ms: [], samples: [] };

async function client(id) {
  const ollama = new Ollama({ host: url });
  let k = id;
  while (Date.now() < deadline) {
    const ref = refs[k++ % refs.length];
    const t0 = Date.now();
    let text = '', done = false, evalCount = 0, first = 0;
    st.requests++;
    try {
      const stream = await ollama.generate({ model, prompt: ref.prompt, raw: true, stream: true,
        options: { temperature: 0, num_predict: Number(numPredict) } });
      for await (const part of stream) {
        if (!first) first = Date.now() - t0;
        text += part.response ?? '';
        if (part.done) { done = true; evalCount = part.eval_count ?? 0; }
      }
    } catch (e) {
      st.errors++;
      if (st.samples.length < 10) st.samples.push(`client ${id}: ${e.message}`);
      continue;
    }
    if (!done || text !== ref.text) {
      st.incomplete++;
      if (st.samples.length < 10) st.samples.push(`client ${id}: done=${done} text=${JSON.stringify(text.slice(0, 80))} want ${JSON.stringify(ref.text.slice(0, 80))}`);
      continue;
    }
    st.completed++;
    st.tokens += evalCount;
    st.latency_ms.push(Date.now() - t0);
    st.first_piece_ms.push(first);
  }
}

const t0 = Date.now();
await Promise.all(Array.from({ length: Number(clients) }, (_, i) => client(i)));
const wall = (Date.now() - t0) / 1000;
const pct = (a, p) => (a.length ? [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))] : 0);
console.log(JSON.stringify({
  clients: Number(clients), seconds: wall, requests: st.requests, completed: st.completed, errors: st.errors,
  incomplete: st.incomplete, tokens: st.tokens, tok_s: st.tokens / wall,
  latency_ms: { p50: pct(st.latency_ms, 0.5), p95: pct(st.latency_ms, 0.95), max: pct(st.latency_ms, 1) },
  first_piece_ms: { p50: pct(st.first_piece_ms, 0.5), max: pct(st.first_piece_ms, 1) },
  samples: st.samples,
}));
