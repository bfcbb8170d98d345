"""
The HTTP service's speed (serve.py): requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients on
loopback, and its throughput in texts/s against `eval.py predict --input` on the same texts. Not a test:
run it by hand on a real-size run, on an otherwise quiet machine if you can (docs/serve.md has figures).

    python experiments/serve_bench.py --run runs/quick/teacher --texts comments.csv [--text-column text]

It starts `eval.py serve --port 0` as a process of its own (as a user would), waits for it to be ready,
and drives it from this process with one thread and one kept-alive connection per client. The clients
run on the same CPU as the server: what they spend is taken from it, as with any loopback benchmark.
The `predict --input` figure is its labelling time: the run of the same command on one text (loading,
start-up) is subtracted. Each round measures predict, then the service right after it, and the ratio
of the two is taken within the round (on a shared machine the load changes between rounds); the
median ratio over `--repeat` rounds is the summary. The steady state of Classifier.predict on the same
texts, in a process that has labelled them once already (no file to read or write, nothing to start),
is measured too: the service's ceiling. Because wall-clock figures on a shared machine move with the
others' load, texts per CPU-second are counted as well (the server process's CPU time from /proc,
predict's from its rusage, start-up taken off): what the labelling costs, whatever else runs.
"""

import argparse
import csv
import http.client
import json
import os
import resource
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


def cpu_seconds(pid):
    """User + system CPU seconds a running process has used (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    """(seconds, start-up seconds, CPU seconds) `eval.py predict --input` takes to label `texts`, the start-up
    (the same command on one text) taken off. predict has no --threads flag: OMP_NUM_THREADS sets torch's."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    base = [sys.executable, str(ROOT / "eval.py"), "predict", "--run", run]
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "texts.csv", Path(tmp) / "labelled.csv"
        with open(source, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text"], *[[t] for t in texts]])
        t, c = time.perf_counter(), children_cpu()
        subprocess.run(base + [texts[0]], cwd=ROOT, check=True, capture_output=True, env=env)
        startup, startup_cpu = time.perf_counter() - t, children_cpu() - c
        t, c = time.perf_counter(), children_cpu()
        subprocess.run(base + ["--input", str(source), "--output", str(out), "--no-progress"], cwd=ROOT, check=True,
                       capture_output=True, env=env)
        return time.perf_counter() - t - startup, startup, children_cpu() - c - startup_cpu


WARM = """
import sys, time, classifier
clf = classifier.Classifier.from_run(sys.argv[1])
texts = [line.rstrip("\\n") for line in open(sys.argv[2], encoding="utf-8")]
clf.predict(texts)  # the first pass: every batch shape's kernels made once
start = time.perf_counter()
clf.predict(texts)
print(len(texts) / (time.perf_counter() - start))
"""


def time_warm_predict(run, texts, threads):
    """texts/s of Classifier.predict on `texts` in a process that has labelled them once already."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "texts.txt"
        source.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
        done = subprocess.run([sys.executable, "-c", WARM, run, str(source)], cwd=ROOT, check=True, capture_output=True,
                              text=True, env=env)
        return float(done.stdout.split()[-1])


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
    rounds = []
    try:
        drive(port, texts, 4, 1, 3)  # warm-up: the first batches of each length pay one-off costs
        for _ in range(args.repeat):
            seconds, startup, cpu = time_predict(args.run, texts, args.threads)
            predict, predict_cpu, rows = len(texts) / seconds, len(texts) / cpu, []
            warm = time_warm_predict(args.run, texts, args.threads)
            for k in sizes:
                for c in clients:
                    before = cpu_seconds(proc.pid)
                    n_requests, n_texts, wall, lat = drive(port, texts, c, k, args.seconds)
                    per_cpu = n_texts / (cpu_seconds(proc.pid) - before)
                    rows.append({"clients": c, "texts_per_request": k, "requests_per_s": n_requests / wall,
                                 "texts_per_s": n_texts / wall, "p50_ms": 1000 * statistics.median(lat),
                                 "p99_ms": 1000 * percentile(lat, 0.99), "requests": n_requests,
                                 "of_predict": n_texts / wall / predict, "of_warm": n_texts / wall / warm,
                                 "texts_per_cpu_s": per_cpu, "cpu_of_predict": per_cpu / predict_cpu})
            rounds.append({"predict_texts_per_s": predict, "predict_texts_per_cpu_s": predict_cpu, "warm_texts_per_s": warm,
                           "startup_s": startup, "rows": rows})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for i, r in enumerate(rounds, start=1):
        print(f"round {i}: eval.py predict --input {r['predict_texts_per_s']:.1f} texts/s ({len(texts)} texts, "
              f"start-up {r['startup_s']:.1f} s taken off; {r['predict_texts_per_cpu_s']:.1f} texts per CPU-second); "
              f"Classifier.predict warm {r['warm_texts_per_s']:.1f} texts/s; then the service:")
        print("| clients | texts/request | requests/s | texts/s | p50 (ms) | p99 (ms) | of predict --input | of warm predict "
              "| texts per CPU-s | per CPU-s, of predict --input |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in r["rows"]:
            print(f"| {row['clients']} | {row['texts_per_request']} | {row['requests_per_s']:.1f} | {row['texts_per_s']:.1f} | "
                  f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['of_predict']:.0%} | {row['of_warm']:.0%} | "
                  f"{row['texts_per_cpu_s']:.1f} | {row['cpu_of_predict']:.0%} |")
    print("median over the rounds of the service's texts/s against that round's predict --input, and warm predict:")
    for j, row in enumerate(rounds[0]["rows"]):
        ratios, warm = [r["rows"][j]["of_predict"] for r in rounds], [r["rows"][j]["of_warm"] for r in rounds]
        cpu = [r["rows"][j]["cpu_of_predict"] for r in rounds]
        print(f"  {row['clients']} client(s), {row['texts_per_request']} text(s) a request: {statistics.median(ratios):.0%} "
              f"({', '.join(f'{x:.0%}' for x in ratios)}); of warm: {statistics.median(warm):.0%} "
              f"({', '.join(f'{x:.0%}' for x in warm)}); per CPU-second: {statistics.median(cpu):.0%} ({', '.join(f'{x:.0%}' for x in cpu)})")
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=1))

if __name__ == "__main__":
    main()
