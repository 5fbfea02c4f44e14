#!/usr/bin/env python3
"""Concurrent streaming clients for bench/serve_batch.sh (stdlib only).

C clients start together; each sends R streaming OpenAI /v1/completions
requests one after another (temperature 0, max_tokens N, usage asked for).
Prints one JSON object: aggregate tok/s over the round's wall time (first
request sent to last token received), time to first token (TTFT) of every
request, the texts by prompt, and errors. Works against `hypura serve` and
llama-server alike (both speak the OpenAI completions stream)."""
import argparse
import http.client
import json
import threading
import time

TOPICS = [
    "the history of the printing press", "how rivers shape valleys", "the life of honey bees",
    "why the sky is blue", "the first steam engines", "how glaciers move", "the spice trade routes",
    "the chemistry of bread", "lighthouses and their keepers", "the migration of whales",
    "how volcanoes form islands", "the invention of paper", "desert plants and water",
    "the craft of clockmaking", "coral reefs at night", "the measurement of longitude",
]


def prompt_of(k):
    # the request's own number first: no two prompts share more than a token or two
    return f"Note {k}: a short story about {TOPICS[k % len(TOPICS)]}."


def one(host, port, model, k, n, out, t_start):
    body = json.dumps({"model": model, "prompt": prompt_of(k), "max_tokens": n, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.time()
    rec = {"k": k, "t0": t0 - t_start, "ttft": None, "tokens": 0, "pieces": 0, "text": "", "error": None}
    try:
        c = http.client.HTTPConnection(host, port, timeout=1800)
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            rec["error"] = f"HTTP {r.status}: {r.read()[:200]!r}"
        else:
            buf = b""
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    break
                o = json.loads(data)
                if "error" in o:
                    rec["error"] = str(o["error"])[:200]
                    break
                for ch in o.get("choices") or []:
                    t = ch.get("text") or ""
                    if t:
                        if rec["ttft"] is None:
                            rec["ttft"] = time.time() - t0
                        rec["pieces"] += 1
                        buf += t.encode()
                if o.get("usage"):
                    rec["tokens"] = o["usage"].get("completion_tokens", 0)
            rec["text"] = buf.decode("utf-8", "replace")
            if not rec["tokens"]:
                rec["tokens"] = rec["pieces"]
        c.close()
    except Exception as e:  # noqa: BLE001 - a bench records every failure
        rec["error"] = repr(e)[:200]
    rec["t1"] = time.time() - t_start
    out.append(rec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="model")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=1, help="per client, one after another")
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--first", type=int, default=0, help="number of the first prompt")
    a = ap.parse_args()
    out = []
    t_start = time.time()

    def client(c):
        for r in range(a.requests):
            one(a.host, a.port, a.model, a.first + c * a.requests + r, a.tokens, out, t_start)

    th = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = max(r["t1"] for r in out) if out else 0
    ok = [r for r in out if not r["error"]]
    ttft = sorted(r["ttft"] for r in ok if r["ttft"] is not None)

    def pct(p):
        if not ttft:
            return None
        return ttft[min(len(ttft) - 1, int(round(p / 100 * (len(ttft) - 1))))]

    tokens = sum(r["tokens"] for r in ok)
    # generation alone: tokens after each request's first, over the time from the first first-token
    # to the last end (prompts excluded as far as they do not overlap generation)
    firsts = [r["t0"] + r["ttft"] for r in ok if r["ttft"] is not None]
    gen_wall = (wall - min(firsts)) if firsts else 0
    gen_tokens = sum(max(0, r["tokens"] - 1) for r in ok)
    print(json.dumps({
        "clients": a.clients, "requests": len(out), "ok": len(ok), "tokens": tokens, "wall_s": wall,
        "tok_s": tokens / wall if wall > 0 else 0, "ttft_p50": pct(50), "ttft_p95": pct(95),
        "gen_tok_s": gen_tokens / gen_wall if gen_wall > 0 else 0,
        "errors": [r["error"] for r in out if r["error"]][:5],
        "texts": {str(r["k"]): r["text"] for r in ok},
        "per_request": [{k: r[k] for k in ("k", "t0", "t1", "ttft", "tokens")} for r in sorted(out, key=lambda r: r["k"])],
    }))


if __name__ == "__main__":
    main()
