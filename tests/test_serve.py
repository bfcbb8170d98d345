"""Tests for the HTTP service (serve.py, `eval.py serve`): a real server on a free loopback port, called
with a real HTTP client (http.client): answers equal to Classifier.predict, attributions equal to
Classifier.explain, the comment-analysis route, every kind of bad request answered with a JSON error
that names the field, a 10 MB body, 503 while loading, and a burst of concurrent clients."""

import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import NEUTRAL, ROOT

import classifier
import serve

TEXTS = ["you are bad and the day was good", "the people there love it", "what a terrible thing to say", "your day"]


def start(clf, name="teacher", **limits):
    service = serve.Service(name, **limits)
    if clf is not None:
        service.ready(clf)
    server = serve.start(service, "127.0.0.1", 0)
    return server, service


def stop(server, service):
    server.shutdown()
    server.server_close()
    service.close()


@pytest.fixture(scope="module")
def teacher(runs):
    return classifier.Classifier.from_run(runs["teacher"], device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def two(two_label_run):
    return classifier.Classifier.from_run(two_label_run, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def server(teacher):
    server, service = start(teacher)
    yield server.server_address[1], service
    stop(server, service)


def call(port, method, path, body=None, raw=None, headers=None, connection=None):
    """(status, JSON answer, headers) of one request; `raw` bytes are sent as they are."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    answer = json.loads(response.read())
    if connection is None:
        conn.close()
    return response.status, answer, dict(response.getheaders())


def same_as_predict(results, expected, labels):
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
        assert got["decisions"] == want.get("decisions", {k: k == want["label"] for k in labels})


def test_health_is_503_until_the_model_is_loaded_then_ok(teacher):
    server, service = start(None)
    port = server.server_address[1]
    try:
        status, answer, headers = call(port, "GET", "/health")
        assert status == 503 and answer == {"status": "loading", "run": "teacher"}
        status, answer, headers = call(port, "POST", "/v1/classify", {"texts": ["you"]})
        assert status == 503 and answer["error"]["status"] == "UNAVAILABLE" and headers["Retry-After"] == "1"
        assert "still loading" in answer["error"]["message"]
        service.ready(teacher)
        status, answer, _ = call(port, "GET", "/health")
        assert status == 200 and answer["status"] == "ok" and answer["labels"] == ["ok", "toxic"] and not answer["multilabel"]
        assert call(port, "POST", "/v1/classify", {"texts": ["you"]})[0] == 200
    finally:
        stop(server, service)


def test_classify_answers_what_classifier_predict_does(server, teacher):
    port, _ = server
    status, answer, headers = call(port, "POST", "/v1/classify", {"texts": TEXTS})
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    assert answer["run"] == "teacher" and answer["labels"] == ["ok", "toxic"] and "explanation" not in answer
    same_as_predict(answer["results"], teacher.predict(TEXTS), teacher.labels)
    assert all("attributions" not in r for r in answer["results"])
    # At the threshold chosen on validation (run.json), as Classifier.verdict decides.
    assert teacher.threshold is not None
    assert [r["label"] for r in answer["results"]] == [
        "toxic" if r["probabilities"]["toxic"] >= teacher.threshold else "ok" for r in answer["results"]]


def test_classify_with_explain_gives_the_attributions_of_classifier_explain(server, teacher):
    port, _ = server
    status, answer, _ = call(port, "POST", "/v1/classify", {"texts": TEXTS[:2], "explain": True, "steps": 32})
    assert status == 200 and answer["explanation"] == {"method": "integrated gradients", "steps": 32, "max_steps": 1024,
                                                       "baseline": "pad"}
    for got, want in zip(answer["results"], teacher.explain(TEXTS[:2], steps=32), strict=True):
        assert set(got["attributions"]) == {"ok", "toxic"} and got["steps"] == want["steps"]
        for label, r in got["attributions"].items():
            assert r["change"] == pytest.approx(want["attributions"][label]["change"], abs=1e-5)
            assert [(w["text"], w["start"], w["end"]) for w in r["words"]] == \
                [(w["text"], w["start"], w["end"]) for w in want["attributions"][label]["words"]]
            assert [w["score"] for w in r["words"]] == pytest.approx([w["score"] for w in want["attributions"][label]["words"]], abs=1e-5)


def test_a_two_question_model_answers_its_decisions(two):
    server, service = start(two, "two")
    try:
        texts = ["you are the vermin here", "what a good day", "you idiot"]
        status, answer, _ = call(server.server_address[1], "POST", "/v1/classify", {"texts": texts})
        assert status == 200 and answer["labels"] == ["toxic", "hate"]
        same_as_predict(answer["results"], two.predict(texts), two.labels)
    finally:
        stop(server, service)


@pytest.mark.parametrize("raw,field,message", [
    (b'{"texts": ["you"', "body", "body: not valid JSON ("),
    (b"\xff\xfe{}", "body", "body: not UTF-8"),
    (b'["you"]', "body", "body: a list; expected a JSON object"),
    (b"{}", "texts", "texts: missing; expected a list of strings"),
    (b'{"texts": "you are bad"}', "texts", "texts: a string; expected a list of strings"),
    (b'{"texts": []}', "texts", "texts: 0 texts; expected 1 to 256 per request"),
    (b'{"texts": ["you", 3]}', "texts[1]", "texts[1]: a number; expected a string"),
    (b'{"texts": ["you", null]}', "texts[1]", "texts[1]: null; expected a string"),
    (b'{"texts": [" \\u200b "]}', "texts[0]", "texts[0]: blank; expected a text with something to classify"),
    (b'{"texts": ["you"], "explain": "yes"}', "explain", "explain: a string; expected true or false"),
    (b'{"texts": ["you"], "steps": 0}', "steps", "steps: 0; expected a whole number from 1 to 1024"),
    (b'{"texts": ["you"], "steps": true}', "steps", "steps: True; expected a whole number"),
    (b'{"text": ["you"]}', "text", "text: unknown field; expected texts, explain, steps"),
])
def test_bad_requests_are_400s_that_name_the_field(server, raw, field, message):
    port, _ = server
    status, answer, _ = call(port, "POST", "/v1/classify", raw=raw)
    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT" and answer["error"]["field"] == field
    assert answer["error"]["message"].startswith(message) and "\n" not in answer["error"]["message"]


def test_too_many_texts_and_wrong_routes_and_methods(server):
    port, _ = server
    status, answer, _ = call(port, "POST", "/v1/classify", {"texts": ["you"] * 257})
    assert status == 400 and answer["error"]["field"] == "texts"
    status, answer, _ = call(port, "POST", "/v2/classify", {"texts": ["you"]})
    assert status == 404 and "no route /v2/classify" in answer["error"]["message"]
    status, answer, headers = call(port, "GET", "/v1/classify")
    assert status == 405 and headers["Allow"] == "POST"
    assert call(port, "GET", "/nowhere")[0] == 404 and call(port, "POST", "/health", {})[0] == 405


def test_a_10_mb_body_is_a_413_and_the_service_goes_on(server, teacher):
    port, _ = server
    body = json.dumps({"texts": ["you are bad " * 1000] * 1000}).encode()  # ~12 MB
    assert len(body) > 10_000_000
    status, answer, headers = call(port, "POST", "/v1/classify", raw=body)
    assert status == 413 and answer["error"]["status"] == "PAYLOAD_TOO_LARGE" and headers["Connection"] == "close"
    assert answer["error"]["message"] == f"body of {len(body)} bytes; expected at most {serve.MAX_BODY} (--max-body)"
    status, answer, _ = call(port, "POST", "/v1/classify", {"texts": TEXTS})
    assert status == 200
    same_as_predict(answer["results"], teacher.predict(TEXTS), teacher.labels)


def test_a_body_without_a_length_is_a_411(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
        chunks = []  # the headers and the body may come in separate packets: read until the server closes
        while chunk := s.recv(65536):
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 411 ") and '"LENGTH_REQUIRED"' in reply
    status, answer, _ = call(port, "POST", "/v1/classify", raw=b"{}", headers={"Content-Length": "abc"})
    assert status == 400 and answer["error"]["field"] == "Content-Length"


def test_a_burst_of_concurrent_clients_each_gets_its_own_right_answer(server, teacher):
    port, service = server
    rng = random.Random(0)
    requests = [[" ".join(rng.sample(NEUTRAL, rng.randint(1, 12)) + [rng.choice(["bad", "good", "terrible", ""])])
                 for _ in range(rng.randint(1, 3))] for _ in range(32 * 4)]
    expected = [teacher.predict(texts) for texts in requests]
    answers, errors, before = [None] * len(requests), [], len(service.batcher.batches)

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # one connection, kept alive, per client
        try:
            for i in range(k, len(requests), 32):
                answers[i] = call(port, "POST", "/v1/classify", {"texts": requests[i]}, connection=conn)
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(repr(e))
        finally:
            conn.close()

    start_time = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert time.monotonic() - start_time < 120 and not errors and not any(t.is_alive() for t in threads)
    for (status, answer, _), want in zip(answers, expected, strict=True):
        assert status == 200
        same_as_predict(answer["results"], want, teacher.labels)
    batches = list(service.batcher.batches)[before:]
    assert sum(batches) == sum(map(len, requests)) and max(batches) > 3  # texts of several clients shared a forward pass
    assert len(batches) < len(requests)


def analyze(port, body):
    return call(port, "POST", "/v1alpha1/comments:analyze", body)


def test_the_comment_analysis_route_answers_in_its_shape(server, teacher):
    port, _ = server
    text = "you are bad and the day was good"
    p = teacher.predict([text])[0]["probabilities"]
    status, answer, _ = analyze(port, {"comment": {"text": text}, "requestedAttributes": {"TOXICITY": {}, "ok": {}},
                                       "languages": ["en"], "doNotStore": True, "clientToken": "abc"})
    assert status == 200 and answer["languages"] == ["en"] and answer["clientToken"] == "abc"
    scores = answer["attributeScores"]
    assert scores["TOXICITY"]["summaryScore"] == {"value": pytest.approx(p["toxic"], abs=1e-5), "type": "PROBABILITY"}
    assert scores["ok"]["summaryScore"]["value"] == pytest.approx(p["ok"], abs=1e-5)  # the model's own label, as it is
    assert scores["TOXICITY"]["spanScores"] == [{"begin": 0, "end": len(text), "score": scores["TOXICITY"]["summaryScore"]}]
    # spanAnnotations: a span per word, scored by its attribution towards the label's logit.
    status, answer, _ = analyze(port, {"comment": {"text": text}, "requestedAttributes": {"TOXICITY": {}}, "spanAnnotations": True})
    spans = answer["attributeScores"]["TOXICITY"]["spanScores"]
    words = teacher.explain([text])[0]["attributions"]["toxic"]["words"]
    assert [(s["begin"], s["end"]) for s in spans] == [(w["start"], w["end"]) for w in words]
    assert [s["score"]["value"] for s in spans] == pytest.approx([w["score"] for w in words], abs=1e-5)
    assert max(spans, key=lambda s: s["score"]["value"])["begin"] == text.index("bad")
    # scoreThreshold: an attribute scoring under it is left out.
    status, answer, _ = analyze(port, {"comment": {"text": text}, "requestedAttributes": {"TOXICITY": {"scoreThreshold": 1.0}}})
    assert status == 200 and answer["attributeScores"] == {}


@pytest.mark.parametrize("body,field,message", [
    ({"requestedAttributes": {"TOXICITY": {}}}, "comment", "comment: missing; expected an object"),
    ({"comment": "hi", "requestedAttributes": {"TOXICITY": {}}}, "comment", "comment: a string; expected an object"),
    ({"comment": {"text": 5}, "requestedAttributes": {"TOXICITY": {}}}, "comment.text", "comment.text: a number; expected a string"),
    ({"comment": {"text": "hi"}}, "requestedAttributes", "requestedAttributes: missing; expected an object"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {}}, "requestedAttributes", "requestedAttributes: an object; expected"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {"INSULT": {}}}, "requestedAttributes.INSULT",
     "requestedAttributes.INSULT: unknown attribute; expected TOXICITY, IDENTITY_ATTACK or one of this model's labels ['ok', 'toxic']"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {"IDENTITY_ATTACK": {}}}, "requestedAttributes.IDENTITY_ATTACK",
     "requestedAttributes.IDENTITY_ATTACK: this model has no 'hate' label"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {"scoreThreshold": 2}}},
     "requestedAttributes.TOXICITY.scoreThreshold", "requestedAttributes.TOXICITY.scoreThreshold: 2; expected a number from 0 to 1"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {"scoreType": "RAW"}}},
     "requestedAttributes.TOXICITY.scoreType", "requestedAttributes.TOXICITY.scoreType: 'RAW'; expected PROBABILITY"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["de"]}, "languages",
     "languages: ['de']: the model reads English"),
    ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "extra": 1}, "extra", "extra: unknown field"),
])
def test_bad_comment_analysis_requests_name_the_field(server, body, field, message):
    status, answer, _ = analyze(server[0], body)
    assert status == 400 and answer["error"]["field"] == field and answer["error"]["message"].startswith(message)


def test_identity_attack_reads_the_hate_label_of_a_two_question_model(two):
    server, service = start(two, "two")
    try:
        text = "you are the vermin here"
        status, answer, _ = analyze(server.server_address[1], {"comment": {"text": text},
                                                              "requestedAttributes": {"IDENTITY_ATTACK": {}, "TOXICITY": {}}})
        p = two.predict([text])[0]["probabilities"]
        assert status == 200
        assert answer["attributeScores"]["IDENTITY_ATTACK"]["summaryScore"]["value"] == pytest.approx(p["hate"], abs=1e-5)
        assert answer["attributeScores"]["TOXICITY"]["summaryScore"]["value"] == pytest.approx(p["toxic"], abs=1e-5)
    finally:
        stop(server, service)


def test_eval_py_serve_listens_on_loopback_answers_and_stops(runs):
    proc = subprocess.Popen([sys.executable, str(ROOT / "eval.py"), "serve", "--run", str(runs["teacher"]), "--port", "0",
                             "--device", "cpu"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # "loading RUN; http://127.0.0.1:PORT/health answers 503 until it is ready"
        port = int(first.split("http://127.0.0.1:")[1].split("/")[0])
        assert proc.stderr.readline().startswith("ready: POST http://127.0.0.1:")
        status, answer, _ = call(port, "GET", "/health")
        assert status == 200 and answer["run"] == str(runs["teacher"])
        status, answer, _ = call(port, "POST", "/v1/classify", {"texts": ["you are bad"]})
        assert status == 200 and answer["results"][0]["label"] == "toxic"
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in err
    done = subprocess.run([sys.executable, str(ROOT / "eval.py"), "serve", "--run", str(runs["teacher"]), "--port", "70000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == "error: --port 70000: expected a port from 0 to 65535"
