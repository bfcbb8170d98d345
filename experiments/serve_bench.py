"""
The HTTP service's speed (serve.py): requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients on
loopback, and its throughput in texts/s against `eval.py predict --input` on the same texts. Not a test:
run it by hand on a real-size run, on an otherwise quiet machine if you can (docs/serve.md has figures).

    python experiments/serve_bench.py --run runs/quick/teacher --texts comments.csv [--text-column text]

It starts `eval.py serve --port 0` as a process of its own (as a user would), waits for it to be ready,
and drives it from this process with one thread and one kept-alive connection per client. The clients
run on the same CPU as the server: what they spend is taken from it, as with any loopback benchmark.
The `predict --input` figure is its labelling time: the run of the same command on one text (loading,
start-up) is subtracted. Each measurement is made `--repeat` times, alternating service and predict, so
that both see the same load; the best of each is reported, and the ratio of the bests.
"""

import argparse
import csv
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_texts(path, column):
    with open(path, newline="", encoding="utf-8") as f:
        return [row[column] for row in csv.DictReader(f) if row[column].strip()]


def start_server(run, threads):
    argv = [sys.executable, str(ROOT / "eval.py"), "serve", "--run", run, "--port", "0", "--host", "127.0.0.1"]
    proc = subprocess.Popen(argv + (["--threads", str(threads)] if threads else []), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    if "http://127.0.0.1:" not in first:
        raise SystemExit(f"error: the server did not start: {first}{proc.stderr.read()}")
    port = int(first.split("http://127.0.0.1:")[1].split("/")[0])
    ready = proc.stderr.readline()
    if not ready.startswith("ready"):
        raise SystemExit(f"error: the server did not load the model: {ready}{proc.stderr.read()}")
    return proc, port


def drive(port, texts, clients, per_request, seconds):
    """(requests, texts, wall seconds, latencies) of `clients` clients sending for about `seconds`."""
    latencies, errors, stop = [], [], time.monotonic() + seconds
    lock = threading.Lock()

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i, mine = k * 7919, []
        try:
            while time.monotonic() < stop:
                batch = [texts[(i + j) % len(texts)] for j in range(per_request)]
                i += per_request * clients
                body = json.dumps({"texts": batch})
                t = time.perf_counter()
                conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                mine.append(time.perf_counter() - t)
                if response.status != 200 or len(json.loads(answer)["results"]) != per_request:
                    errors.append(f"{response.status}: {answer[:200]!r}")
        except OSError as e:
            errors.append(repr(e))
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"error: {len(errors)} failed request(s), e.g. {errors[0]}")
    return len(latencies), len(latencies) * per_request, wall, sorted(latencies)


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def time_predict(run, texts, threads):
    """Seconds `eval.py predict --input` takes to label `texts`, start-up (the same command on one text) taken
    off, and that start-up. predict has no --threads flag: OMP_NUM_THREADS sets torch's threads."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    base = [sys.executable, str(ROOT / "eval.py"), "predict", "--run", run]
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "texts.csv", Path(tmp) / "labelled.csv"
        with open(source, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text"], *[[t] for t in texts]])
        t = time.perf_counter()
        subprocess.run(base + [texts[0]], cwd=ROOT, check=True, capture_output=True, env=env)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(base + ["--input", str(source), "--output", str(out), "--no-progress"], cwd=ROOT, check=True,
                       capture_output=True, env=env)
        return time.perf_counter() - t - startup, startup


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder (a real-size model: the tiny test model says little)")
    p.add_argument("--texts", required=True, help="a CSV file of texts to send")
    p.add_argument("--text-column", default="text")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated (default 1,8,32)")
    p.add_argument("--per-request", default="1", help="texts per request, comma-separated (default 1)")
    p.add_argument("--seconds", type=float, default=15, help="how long each setting is driven (default 15)")
    p.add_argument("--repeat", type=int, default=2, help="alternating rounds of service and predict (default 2)")
    p.add_argument("--threads", type=int, help="CPU threads of the server and of predict (default: torch's choice)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    texts = read_texts(args.texts, args.text_column)
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(k) for k in args.per_request.split(",")]
    proc, port = start_server(args.run, args.threads)
    rows, predict_rates = {}, []
    try:
        drive(port, texts, 4, 1, 3)  # warm-up: the first batches of each length pay one-off costs
        for _ in range(args.repeat):
            seconds, startup = time_predict(args.run, texts, args.threads)
            predict_rates.append(len(texts) / seconds)
            for k in sizes:
                for c in clients:
                    n_requests, n_texts, wall, lat = drive(port, texts, c, k, args.seconds)
                    row = {"clients": c, "texts_per_request": k, "requests_per_s": n_requests / wall, "texts_per_s": n_texts / wall,
                           "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * percentile(lat, 0.99), "requests": n_requests}
                    best = rows.get((c, k))
                    if best is None or row["texts_per_s"] > best["texts_per_s"]:
                        rows[(c, k)] = row
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    predict = max(predict_rates)
    print(f"eval.py predict --input: {predict:.1f} texts/s (best of {args.repeat}: "
          f"{', '.join(f'{r:.1f}' for r in predict_rates)}; start-up {startup:.1f} s taken off)")
    print("| clients | texts/request | requests/s | texts/s | p50 (ms) | p99 (ms) | of predict --input |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (c, k), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {c} | {k} | {r['requests_per_s']:.1f} | {r['texts_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['texts_per_s'] / predict:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"predict_texts_per_s": predict_rates, "rows": list(rows.values())}, indent=1))


if __name__ == "__main__":
    main()
