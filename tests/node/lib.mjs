// Helpers shared by the `hypura serve` tests: start a server on a free port,
// compute reference text with `hypura run`, and raw HTTP requests.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = process.env.HY_BIN;
export const WORK = process.env.HY_TEST_WORK;
export const MODEL = WORK && join(WORK, 'tiny.gguf');
export const NAME = 'tiny';

// Exit 77 (ctest: skipped) with a reason when what the tests need is missing.
export function requireSetup() {
  const here = dirname(fileURLToPath(import.meta.url));
  const why = !BIN || !WORK ? 'HY_BIN and HY_TEST_WORK must be set (run through ctest)'
    : !existsSync(join(here, 'node_modules', 'ollama')) || !existsSync(join(here, 'node_modules', 'openai'))
      ? `node clients missing: run scripts/setup.sh (npm ci --prefix ${here})`
      : !existsSync(MODEL) ? `model ${MODEL} missing (the server_model test makes it)` : null;
  if (why) {
    console.log(`skip: ${why}`);
    process.exit(77);
  }
}

// Starts `hypura serve MODEL --port 0` and resolves once it prints its URL.
export async function startServer(args = []) {
  const proc = spawn(join(BIN, 'hypura'), ['serve', MODEL, '--port', '0', '-t', '1', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s:\n${log}`)), 30000);
    proc.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => reject(new Error(`server exited (${code ?? signal}) before listening:\n${log}`)));
  });
  return {
    proc,
    url,
    log: () => log,
    exited,
    // resolves with the matches once the log has `count` lines matching `re` (global regex)
    async waitLog(re, count = 1, timeoutMs = 5000) {
      const t0 = Date.now();
      for (;;) {
        const m = log.match(re) ?? [];
        if (m.length >= count || Date.now() - t0 > timeoutMs) return m;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    // signal it and wait for the exit; resolves {code, signal, ms}
    async stop(sig = 'SIGTERM', timeoutMs = 10000) {
      const t0 = Date.now();
      proc.kill(sig);
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const r = await exited;
      clearTimeout(timer);
      return { ...r, ms: Date.now() - t0 };
    },
  };
}

// llama.cpp's built-in chatml template (the tiny model has no template of its own)
export function chatml(messages, addAssistant = true) {
  return messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('') +
    (addAssistant ? '<|im_start|>assistant\n' : '');
}

// The reference: what `hypura run MODEL -p PROMPT --temp 0 -n N` prints.
export function hypuraRun(prompt, n) {
  const r = spawnSync(join(BIN, 'hypura'), ['run', MODEL, '-p', prompt, '--temp', '0', '-n', String(n), '-t', '1'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`hypura run failed (${r.status}): ${r.stderr}`);
  const pm = r.stderr.match(/prompt (\d+) tokens/);
  const gm = r.stderr.match(/generation (\d+) tokens/);
  const sm = r.stderr.match(/stop: (\w+)/);
  return {
    text: r.stdout.endsWith('\n') ? r.stdout.slice(0, -1) : r.stdout,
    promptTokens: Number(pm[1]),
    genTokens: Number(gm[1]),
    stop: sm[1],
  };
}

// One raw HTTP request. body: string/Buffer (sent as is) or object (JSON).
// Resolves {status, headers, text, json}.
export function request(base, method, path, body, headers = {}) {
  const u = new URL(path, base);
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined
      : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const req = http.request(
      { hostname: u.hostname, port: u.port, path: u.pathname + u.search, method, agent: false,
        headers: { ...(data !== undefined && headers['transfer-encoding'] === undefined
          ? { 'content-length': Buffer.byteLength(data) } : {}), ...headers } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try { json = JSON.parse(text); } catch { json = undefined; }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', reject);
      });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

// Splits an NDJSON body into objects.
export function ndjson(text) {
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}
