#!/usr/bin/env python3
"""Load client for OpenAI-style /v1/completions servers (autoneg serve, llama.cpp's llama-server).

C client threads each send streamed completions one after another (a fresh connection per request)
for SECONDS; at the end of the window every open connection is closed (both servers cancel a
generation whose client went away), so a slow server cannot stretch the run. Every request is the same
shape: a short Stable Diffusion prompt from PROMPTS (round robin), max_tokens, temperature 0, seed 1,
stream on with usage in the last chunk. Only what arrived inside the window counts. Prints one JSON line:
  tok_s     generated tokens that arrived in the window / window: a finished request counts its usage
            field's completion_tokens, one cut at the end of the window its text chunks so far
  ttft      time to first token (request sent -> first chunk with text), p50 / p99, ms, of the requests
            that got one
  tpot      per-token latency after the first: (last text chunk - first) / (chunks - 1), p50 / p99, ms
Standard library only.
  python3 bench/serve_client.py --url http://127.0.0.1:8080 --clients 16 --seconds 10 [--models a1,a2]
"""
import argparse
import http.client
import json
import socket
import threading
import time
import urllib.parse

PROMPTS = [
    "a cat sitting in a garden, sunlight, highly detailed",
    "portrait of an old fisherman, oil painting, dramatic lighting",
    "a castle at dusk, fantasy, matte painting, 4k",
    "cyberpunk city street at night, neon lights, rain",
    "a bowl of fruit on a wooden table, still life, soft light",
    "an astronaut riding a horse on the moon, photorealistic",
    "a misty forest with a small river, morning, cinematic",
    "anime girl with blue hair, school uniform, cherry blossoms",
    "a red sports car on a mountain road, motion blur",
    "watercolor painting of a lighthouse by the sea",
    "a dragon flying over snowy mountains, epic, concept art",
    "close-up photo of a dewdrop on a leaf, macro, bokeh",
    "a cozy library with tall bookshelves, warm light",
    "steampunk airship above a victorian city, detailed",
    "a samurai standing in a bamboo forest, ink drawing",
    "a tropical beach at sunset, palm trees, golden hour",
]


def percentile(values, q):
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def one_request(host, port, key, body, rec, conns, lock):
    """Sends one streamed completion, filling rec (t0, first, last, chunks, usage, done) as chunks
    arrive; raises on an HTTP error. The connection is registered in conns so main can close it."""
    conn = http.client.HTTPConnection(host, port, timeout=600)
    with lock:
        conns.add(conn)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = "Bearer " + key
        rec["t0"] = time.perf_counter()
        conn.request("POST", "/v1/completions", body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError("HTTP %d: %s" % (resp.status, resp.read()[:200]))
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                rec["done"] = True
                break
            ev = json.loads(data)
            if ev.get("usage"):
                rec["usage"] = ev["usage"].get("completion_tokens")
            for ch in ev.get("choices") or []:
                if ch.get("text"):
                    now = time.perf_counter()
                    if rec["first"] is None:
                        rec["first"] = now
                    rec["last"] = now
                    rec["chunks"] += 1
    finally:
        with lock:
            conns.discard(conn)
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--models", default="", help="comma-separated model names, round robin; empty: none sent")
    ap.add_argument("--key", default="")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    models = [m for m in a.models.split(",") if m]
    lock = threading.Lock()
    counter = [0]
    records, errors, conns = [], [], set()
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            with lock:
                i = counter[0]
                counter[0] += 1
            req = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": a.max_tokens, "temperature": 0,
                   "seed": 1, "stream": True, "stream_options": {"include_usage": True}}
            if models:
                req["model"] = models[i % len(models)]
            rec = {"t0": None, "first": None, "last": None, "chunks": 0, "usage": None, "done": False}
            with lock:
                records.append(rec)
            try:
                one_request(u.hostname, u.port, a.key, json.dumps(req), rec, conns, lock)
            except Exception as e:  # counted and reported (unless cut by the window), the run goes on
                if not stop.is_set():
                    with lock:
                        errors.append(str(e)[:200])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.clients)]
    for t in threads:
        t.start()
    time.sleep(a.seconds)
    stop.set()
    end = time.perf_counter()
    with lock:  # cut every request still running: its socket closes, the server cancels it
        for c in list(conns):
            try:
                c.sock and c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    for t in threads:
        t.join(timeout=30)
    with lock:
        recs = [dict(r) for r in records]
    done = [r for r in recs if r["done"] and r["last"] is not None and r["last"] <= end]
    cut = [r for r in recs if r not in done]
    tokens = sum(r["usage"] if r["usage"] is not None else r["chunks"] for r in done)
    tokens += sum(r["chunks"] for r in cut)  # a cut request's chunks all arrived before the cut
    ttfts = [r["first"] - r["t0"] for r in recs if r["first"] is not None and r["first"] <= end]
    tpots = [(r["last"] - r["first"]) / (r["chunks"] - 1) for r in recs if r["chunks"] > 1]
    window = end - start
    out = {"label": a.label, "clients": a.clients, "window_s": round(window, 3), "finished": len(done),
           "cut": len([r for r in cut if r["t0"] is not None]), "errors": len(errors), "tokens": tokens,
           "tok_s": round(tokens / window, 2),
           "tokens_per_finished": round(sum(r["usage"] or r["chunks"] for r in done) / len(done), 2) if done else 0}
    if ttfts:
        out["ttft_p50_ms"] = round(1000 * percentile(ttfts, 50), 1)
        out["ttft_p99_ms"] = round(1000 * percentile(ttfts, 99), 1)
    if tpots:
        out["tpot_p50_ms"] = round(1000 * percentile(tpots, 50), 2)
        out["tpot_p99_ms"] = round(1000 * percentile(tpots, 99), 2)
    if errors:
        out["first_error"] = errors[0]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
