"""
A local HTTP service for a trained run: JSON in, labels (and, when asked, the words that made
them) out, for moderation tools that call a classifier over HTTP rather than from Python.

    python eval.py serve --run runs/quick/teacher --port 8000
    curl -s 127.0.0.1:8000/v1/classify -d '{"texts": ["you are awesome", "shut up, idiot"]}'

Routes:

    GET  /health                     200 {"status": "ok", "run", "labels", ...}; 503 {"status": "loading"} before
    POST /v1/classify                {"texts": [...], "explain": false, "steps": 64} -> {"results": [...]}, one per
                                     text: label, score, probabilities, decisions (and attributions)
    POST /v1alpha1/comments:analyze  the request and response of the widely used comment-analysis API:
                                     {"comment": {"text"}, "requestedAttributes": {"TOXICITY": {}}}
                                     -> {"attributeScores": {"TOXICITY": {"summaryScore": {"value"}, "spanScores"}}}

Batching across clients: every handler thread puts its texts on one queue and waits. A worker
thread, the only one that runs the model's forward pass, takes the first request waiting, then
whatever else arrives within `max_wait` seconds (a few milliseconds) up to `max_batch` texts, and
labels them in one Classifier.predict call (which sorts them by length into batches): one client
waits at most max_wait longer than alone; 32 clients share forward passes instead of queuing for
32. Explanations (integrated gradients, explain.py) are computed in the handler thread, one at a
time, on the plain fp32 copy of the model, so that they do not hold up the predictions.

Errors are JSON, {"error": {"code", "status", "message", "field"}}: 400 for a malformed body or a
field of the wrong type or value (the field is named), 404/405 for a wrong route or method, 411
without a Content-Length, 413 for a body over `max_body` bytes, 503 while the model loads.

The standard library's http.server (ThreadingHTTPServer, a thread per connection) rather than a
framework: no dependency to add to torch, tokenizers, numpy and safetensors, and every step of
the service readable here. A thread per connection is enough because the model's work happens
in one worker thread anyway, and torch releases the GIL while it computes. It listens on
127.0.0.1 by default and has no authentication or TLS: put it behind a proxy to serve beyond one
computer. docs/serve.md has the figures (requests/s, latency) and the reasons in full.
"""

import json
import queue
import re
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import classifier
import explain

MAX_BODY = 1 << 20  # 1 MiB: a few thousand comments
MAX_TEXTS = 256  # texts per request
DRAIN_LIMIT = 64 << 20  # a body over max_body up to this size is read and dropped, so the client gets its 413
STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 411: "LENGTH_REQUIRED",
          413: "PAYLOAD_TOO_LARGE", 500: "INTERNAL", 503: "UNAVAILABLE"}
# The comment-analysis API's attribute names, and the label of a nanobert model each one reads.
ATTRIBUTES = {"TOXICITY": "toxic", "IDENTITY_ATTACK": "hate"}


class ApiError(Exception):
    def __init__(self, code, message, field=None):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    def body(self):
        error = {"code": self.code, "status": STATUS.get(self.code, "UNKNOWN"), "message": self.message}
        return {"error": error | ({"field": self.field} if self.field else {})}


# -----------------------------------------------------------------------------
# Checking the requests: every field's type and value, and a message that names it


def kind(value):
    """What a JSON value is, in words."""
    for t, name in ((bool, "true/false"), (str, "a string"), (int, "a number"), (float, "a number"), (list, "a list"),
                    (dict, "an object"), (type(None), "null")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def check_fields(body, allowed, where=""):
    for key in body:
        if key not in allowed:
            raise ApiError(400, f"{where}{key}: unknown field; expected {', '.join(allowed)}", f"{where}{key}")


def check_text(value, field, what):
    if not isinstance(value, str):
        raise ApiError(400, f"{field}: {kind(value)}; expected a string", field)
    if classifier.is_blank(value):
        raise ApiError(400, f"{field}: blank; expected {what}", field)
    return value


def check_bool(body, key, default=False):
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{key}: {kind(value)}; expected true or false", key)
    return value


def check_classify(body, max_texts=MAX_TEXTS):
    """(texts, explain, steps) of a /v1/classify body."""
    check_fields(body, ("texts", "explain", "steps"))
    if "texts" not in body:
        raise ApiError(400, 'texts: missing; expected a list of strings, e.g. {"texts": ["you are awesome"]}', "texts")
    texts = body["texts"]
    if not isinstance(texts, list):
        raise ApiError(400, f"texts: {kind(texts)}; expected a list of strings (one text is [\"...\"])", "texts")
    if not texts or len(texts) > max_texts:
        raise ApiError(400, f"texts: {len(texts)} texts; expected 1 to {max_texts} per request", "texts")
    texts = [check_text(t, f"texts[{i}]", "a text with something to classify") for i, t in enumerate(texts)]
    steps = body.get("steps", explain.STEPS)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= explain.MAX_STEPS:
        raise ApiError(400, f"steps: {steps!r}; expected a whole number from 1 to {explain.MAX_STEPS}", "steps")
    return texts, check_bool(body, "explain"), steps


def label_for(name, labels):
    """The model's label that an attribute name asks for: the model's own names as they are, TOXICITY the
    toxic label (class 1 of a binary model whose classes are bare numbers), IDENTITY_ATTACK hate."""
    if name in labels:
        return name
    field = f"requestedAttributes.{name}"
    if name not in ATTRIBUTES:
        raise ApiError(400, f"{field}: unknown attribute; expected {', '.join(ATTRIBUTES)} or one of this model's labels "
                       f"{labels}", field)
    if ATTRIBUTES[name] in labels:
        return ATTRIBUTES[name]
    if name == "TOXICITY" and len(labels) == 2 and all(re.fullmatch(r"(label_?)?\d+", n, re.IGNORECASE) for n in labels):
        return labels[1]  # the toxic datasets put the toxic class at 1 (as the app reads it)
    raise ApiError(400, f"{field}: this model has no {ATTRIBUTES[name]!r} label; expected one of its labels {labels}", field)


def check_analyze(body, labels):
    """(text, {attribute: (label, threshold or None)}, spans) of a comments:analyze body."""
    check_fields(body, ("comment", "requestedAttributes", "spanAnnotations", "languages", "doNotStore", "clientToken",
                        "sessionId", "communityId", "context"))
    comment = body.get("comment")
    if not isinstance(comment, dict):
        raise ApiError(400, f"comment: {kind(comment) if 'comment' in body else 'missing'}; expected an object "
                       '{"text": "..."}', "comment")
    check_fields(comment, ("text", "type"), "comment.")
    if comment.get("type", "PLAIN_TEXT") != "PLAIN_TEXT":
        raise ApiError(400, f"comment.type: {comment['type']!r}; expected PLAIN_TEXT", "comment.type")
    text = check_text(comment.get("text"), "comment.text", "a comment to analyze")
    requested = body.get("requestedAttributes")
    if not isinstance(requested, dict) or not requested:
        raise ApiError(400, f"requestedAttributes: {kind(requested) if requested is not None else 'missing'}; expected an "
                       'object of one attribute or more, e.g. {"TOXICITY": {}}', "requestedAttributes")
    languages = body.get("languages", ["en"])
    if not isinstance(languages, list) or not all(isinstance(x, str) for x in languages):
        raise ApiError(400, f"languages: {kind(languages)}; expected a list of language codes, e.g. [\"en\"]", "languages")
    if languages and not any(x.lower().split("-")[0] == "en" for x in languages):
        raise ApiError(400, f"languages: {languages}: the model reads English; expected [\"en\"]", "languages")
    attributes = {}
    for name, options in requested.items():
        field = f"requestedAttributes.{name}"
        label = label_for(name, labels)
        if not isinstance(options, dict):
            raise ApiError(400, f"{field}: {kind(options)}; expected an object (may be empty: {{}})", field)
        check_fields(options, ("scoreType", "scoreThreshold"), field + ".")
        if options.get("scoreType", "PROBABILITY") != "PROBABILITY":
            raise ApiError(400, f"{field}.scoreType: {options['scoreType']!r}; expected PROBABILITY", field + ".scoreType")
        threshold = options.get("scoreThreshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1):
            raise ApiError(400, f"{field}.scoreThreshold: {threshold!r}; expected a number from 0 to 1", field + ".scoreThreshold")
        attributes[name] = (label, threshold)
    return text, attributes, check_bool(body, "spanAnnotations")


# -----------------------------------------------------------------------------
# The worker thread that batches requests across clients


class Batcher:
    """Texts from every client labelled together: one worker thread takes the requests waiting, up to
    max_batch texts or max_wait seconds after the first, and makes one Classifier.predict call."""

    def __init__(self, clf, max_batch=64, max_wait=0.005):
        self.clf, self.max_batch, self.max_wait = clf, max_batch, max_wait
        self.requests = queue.Queue()  # (texts, Future) per request; None: stop
        self.batches = deque(maxlen=100_000)  # the number of texts of each recent predict call, for the tests
        self.worker = threading.Thread(target=self.work, name="batcher", daemon=True)
        self.worker.start()

    def predict(self, texts) -> list[dict]:
        """Classifier.predict's answers for `texts`, computed in a batch with the other clients' texts."""
        future = Future()
        self.requests.put((texts, future))
        return future.result()

    def work(self):
        while (first := self.requests.get()) is not None:
            waiting, count, deadline, stop = [first], len(first[0]), time.monotonic() + self.max_wait, False
            while count < self.max_batch:
                try:
                    item = self.requests.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                waiting.append(item)
                count += len(item[0])
            self.batches.append(count)
            try:
                results = self.clf.predict([t for texts, _ in waiting for t in texts])
            except Exception as e:  # noqa: BLE001 -- the clients hear of it (a 500), the worker lives on
                for _, future in waiting:
                    future.set_exception(e)
            else:
                for texts, future in waiting:
                    future.set_result(results[:len(texts)])
                    results = results[len(texts):]
            if stop:
                return

    def close(self):
        self.requests.put(None)
        self.worker.join(timeout=10)


# -----------------------------------------------------------------------------
# The service: the model once loaded, and the answer to each route


class Service:
    def __init__(self, name, *, max_batch=64, max_wait=0.005, max_body=MAX_BODY, max_texts=MAX_TEXTS):
        self.name, self.max_batch, self.max_wait, self.max_body, self.max_texts = name, max_batch, max_wait, max_body, max_texts
        self.clf = self.batcher = None  # None: still loading
        self.explaining = threading.Lock()  # one explanation at a time: each is many forward and backward passes

    def ready(self, clf):
        self.batcher = Batcher(clf, self.max_batch, self.max_wait)
        self.clf = clf

    def close(self):
        if self.batcher:
            self.batcher.close()

    def health(self):
        if self.clf is None:
            return 503, {"status": "loading", "run": self.name}
        return 200, {"status": "ok", "run": self.name, "labels": self.clf.labels, "multilabel": self.clf.multilabel,
                     "max_length": self.clf.max_length, "max_batch": self.max_batch, "max_texts": self.max_texts}

    def model(self):
        if self.clf is None:
            raise ApiError(503, "the model is still loading; try again in a moment")
        return self.clf

    def attributions(self, texts, steps):
        """(explain.explain's answer per text, note) on the plain fp32 copy of the model."""
        net, note = self.clf.explaining_model()
        with self.explaining:
            found = explain.explain(net, self.clf.tokenizer, texts, max_length=self.clf.max_length, labels=self.clf.labels,
                                    steps=steps)
        return found, note

    def classify(self, body):
        clf = self.model()
        texts, wants_explain, steps = check_classify(body, self.max_texts)
        out = {"run": self.name, "labels": clf.labels, "results": []}
        for result in self.batcher.predict(texts):
            decisions = result.get("decisions") or {k: k == result["label"] for k in clf.labels}  # one class: the chosen one
            out["results"].append({"label": result["label"], "score": result["score"],
                                   "probabilities": result["probabilities"], "decisions": decisions})
        if wants_explain:
            found, note = self.attributions(texts, steps)
            for result, e in zip(out["results"], found, strict=True):
                result["attributions"] = {label: {k: r[k] for k in ("logit", "baseline_logit", "change", "error", "words")}
                                          for label, r in e["labels"].items()}
                result["steps"] = e["steps"]  # the integral's, doubled from the request's where the scores did not add up
            out["explanation"] = {"method": "integrated gradients", "steps": steps, "max_steps": explain.MAX_STEPS,
                                  "baseline": "pad"} | ({"note": note} if note else {})
        return out

    def analyze(self, body):
        clf = self.model()
        text, attributes, spans = check_analyze(body, clf.labels)
        [result] = self.batcher.predict([text])
        found = self.attributions([text], explain.STEPS)[0][0]["labels"] if spans else None
        scores = {}
        for name, (label, threshold) in attributes.items():
            p = result["probabilities"][label]
            if threshold is not None and p < threshold:
                continue  # as the API does: an attribute under its scoreThreshold is left out
            if spans:  # one span per word: its integrated gradient towards the label's logit (not a probability)
                span_scores = [{"begin": w["start"], "end": w["end"], "score": {"value": w["score"], "type": "LOGIT_ATTRIBUTION"}}
                               for w in found[label]["words"]]
            else:  # as the API answers by default: one span, the whole text
                span_scores = [{"begin": 0, "end": len(text), "score": {"value": p, "type": "PROBABILITY"}}]
            scores[name] = {"spanScores": span_scores, "summaryScore": {"value": p, "type": "PROBABILITY"}}
        out = {"attributeScores": scores, "languages": ["en"], "detectedLanguages": ["en"]}
        return out | ({"clientToken": body["clientToken"]} if "clientToken" in body else {})


# -----------------------------------------------------------------------------
# HTTP


ROUTES = {"/v1/classify": "classify", "/v1alpha1/comments:analyze": "analyze"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client sends its next request on the same connection
    server_version = "nanobert"
    timeout = 30  # seconds a client may take to send its request

    def send_json(self, code, payload, close=False):
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if code == 503:
            self.send_header("Retry-After", "1")
        if code == 405:
            self.send_header("Allow", "GET" if self.path.split("?")[0] == "/health" else "POST")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        """The request's JSON object; an ApiError for a missing length, a body too large, bytes that are not JSON."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "a chunked body is not read; expected a Content-Length header")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise ApiError(411, "no Content-Length header; expected the length of the JSON body")
        if not raw.strip().isdigit():
            raise ApiError(400, f"Content-Length {raw!r}; expected a number of bytes", "Content-Length")
        length, limit = int(raw), self.server.service.max_body
        if length > limit:
            if length <= DRAIN_LIMIT:  # read it away, so that the client, still sending, can read the answer
                left = length
                while left > 0 and (chunk := self.rfile.read(min(1 << 16, left))):
                    left -= len(chunk)
            raise ApiError(413, f"body of {length} bytes; expected at most {limit} (--max-body)")
        data = self.rfile.read(length)
        self.body_read = True
        try:
            body = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "body: not UTF-8; expected a JSON object in UTF-8", "body") from None
        except json.JSONDecodeError as e:
            raise ApiError(400, f"body: not valid JSON ({e}); expected a JSON object", "body") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"body: {kind(body)}; expected a JSON object", "body")
        return body

    def answer(self, route):
        service, self.body_read = self.server.service, False
        try:
            if route is None:
                raise ApiError(404, f"no route {self.path}; expected GET /health, POST {', POST '.join(ROUTES)}")
            code, payload = 200, getattr(service, route)(self.read_body())
        except ApiError as e:
            code, payload = e.code, e.body()
        except Exception as e:  # noqa: BLE001 -- a bug must not take the service down: a 500, and the log
            self.log_error("500 on %s: %r", self.path, e)
            code, payload = 500, ApiError(500, f"internal error ({type(e).__name__}: {e})").body()
        self.send_json(code, payload, close=not self.body_read)  # a body left unread would be read as the next request

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/health":
            self.send_json(*self.server.service.health())
        elif path in ROUTES:
            self.send_json(405, ApiError(405, f"{path} takes POST; expected POST with a JSON body").body())
        else:
            self.send_json(404, ApiError(404, f"no route {path}; expected GET /health, POST {', POST '.join(ROUTES)}").body())

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/health":
            self.send_json(405, ApiError(405, "/health takes GET").body())
            return
        self.answer(ROUTES.get(path))

    def log_message(self, format, *args):  # noqa: A002 -- the base class's name
        if self.server.verbose:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a connection still open does not keep the process alive
    request_queue_size = 128  # the listen backlog: a burst of clients connects at once (the default is 5)

    def __init__(self, address, service, verbose=False):
        super().__init__(address, Handler)
        self.service, self.verbose = service, verbose


def start(service, host="127.0.0.1", port=0, verbose=False):
    """The server listening on host:port (0: a free port; server.server_address says which), answering in a
    thread of its own."""
    server = Server((host, port), service, verbose)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


# -----------------------------------------------------------------------------
# The command line: eval.py serve


def add_flags(p):
    p.add_argument("--run", required=True, help="run folder written by train.py")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--max-batch", type=int, default=64, help="texts labelled in one forward call, across clients (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default 5 ms)")
    p.add_argument("--max-body", type=int, default=MAX_BODY, help=f"largest request body in bytes (default {MAX_BODY})")
    p.add_argument("--max-texts", type=int, default=MAX_TEXTS, help=f"texts per request (default {MAX_TEXTS})")
    p.add_argument("--threads", type=int, help="CPU threads of the model (default: torch's choice)")
    p.add_argument("--log", action="store_true", help="a line per request on stderr")


def main(args):
    import torch

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: expected a port from 0 to 65535")
    for flag in ("max_batch", "max_body", "max_texts", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a number above 0")
    if args.max_wait_ms < 0:
        raise ValueError(f"--max-wait-ms {args.max_wait_ms}: expected 0 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    service = Service(str(args.run), max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000, max_body=args.max_body,
                      max_texts=args.max_texts)
    try:
        server = start(service, args.host, args.port, verbose=args.log)
    except OSError as e:
        raise ValueError(f"--host {args.host} --port {args.port}: cannot listen there ({e.strerror}); expected a free port "
                         "on an address of this computer") from None
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}, beyond this computer; the service has no authentication", file=sys.stderr)
    print(f"loading {args.run}; http://{host}:{port}/health answers 503 until it is ready", file=sys.stderr)
    try:
        service.ready(classifier.Classifier.from_run(args.run, device=args.device, precision=args.precision, fast=args.fast))
        print(f"ready: POST http://{host}:{port}/v1/classify, /v1alpha1/comments:analyze; GET /health (Ctrl-C stops)",
              file=sys.stderr, flush=True)
        threading.Event().wait()  # the server's thread answers; this one waits for Ctrl-C
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.shutdown()
        server.server_close()
        service.close()
