"""Tests for distill.py: layer choice, student construction, and each loss term by hand."""

import math
from pathlib import Path

import pytest
import torch

import distill as D
import model as M
import pretrained

TINY = Path(__file__).parent / "fixtures" / "tiny-bert"


@pytest.fixture(scope="module")
def teacher():
    # A 6-layer teacher made from the 3-layer tiny model, so that odd and even differ.
    t = pretrained.from_pretrained(str(TINY), verbose=False)
    six = M.BertForSequenceClassification(M.BertConfig(**{**t.config.__dict__, "num_hidden_layers": 6}))
    six.load_state_dict(t.state_dict(), strict=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in six.bert.encoder.layer[3:].parameters():
            p.add_(0.1 * torch.randn_like(p))
    return six.eval()


@pytest.mark.parametrize("spec, n, expected", [
    ("odd", 12, [1, 3, 5, 7, 9, 11]), ("even", 12, [2, 4, 6, 8, 10, 12]),
    ("odd", 6, [1, 3, 5]), ("even", 6, [2, 4, 6]), ("1,2,12", 12, [1, 2, 12]), ([4], 6, [4]),
    ("bottom", 12, [1, 2, 3, 4, 5, 6]), ("top", 12, [7, 8, 9, 10, 11, 12]), ("bottom", 3, [1]), ("top", 3, [3]),
])
def test_parse_layers(spec, n, expected):
    assert D.parse_layers(spec, n) == expected


@pytest.mark.parametrize("spec, words", [
    ("", "no layers chosen"), ("0,1", "layer 0 out of range; the teacher has layers 1..6"),
    ("1,7", "layer 7 out of range"), ("1,3,3", "repeated layer 3"), ("3,1", "increasing order"),
    ("one,two", "expected odd, even, bottom, top, auto"), ("auto:0", "auto:K with K in 1..6"),
    ("auto:x", "auto:K with K in 1..6"), ("auto", "needs the importance of each of the 6 teacher layers"),
])
def test_bad_layer_lists_are_clear_errors(spec, words):
    with pytest.raises(ValueError, match=words):
        D.parse_layers(spec, 6)


def test_auto_keeps_the_most_important_layers_in_their_order():
    importance = [0.5, 0.01, 2.0, 0.02, 0.3, 0.9]  # ranking: 3, 6, 1, 5, 4, 2
    assert D.parse_layers("auto", 6, importance) == [1, 3, 6]
    assert D.parse_layers("auto:2", 6, importance) == [3, 6]
    assert D.parse_layers("auto:6", 6, importance) == [1, 2, 3, 4, 5, 6]
    for k in range(1, 7):  # valid and distinct, whatever the scores
        chosen = D.parse_layers(f"auto:{k}", 6, torch.rand(6).tolist())
        assert len(chosen) == len(set(chosen)) == k and chosen == sorted(chosen) and set(chosen) <= set(range(1, 7))
    with pytest.raises(ValueError, match="needs the importance"):
        D.parse_layers("auto", 6, [1.0] * 5)


def test_layer_importance_is_the_kl_of_the_teacher_without_each_layer(teacher):
    torch.manual_seed(0)
    batches = []
    for n in (3, 2):
        ids = torch.randint(5, 900, (n, 8))
        mask = torch.ones(n, 8, dtype=torch.long)
        mask[0, 6:] = 0
        batches.append((ids, mask, torch.zeros_like(ids)))
    before = teacher.state_dict()
    scores = D.layer_importance(teacher, batches)
    assert len(scores) == 6 and all(s >= 0 for s in scores)
    # The same number from a student that simply lacks the layer, and the KL written out.
    with torch.no_grad():
        for skip in (1, 4):
            without = D.make_student(teacher, [i for i in range(1, 7) if i != skip]).eval()
            total = 0.0
            for b in batches:
                p = torch.softmax(teacher(*b).logits, -1)
                q = torch.softmax(without(*b).logits, -1)
                total += (p * (p.log() - q.log())).sum().item()
            assert scores[skip - 1] == pytest.approx(total / 5, rel=1e-4, abs=1e-7)
    # The teacher is given back whole.
    assert len(teacher.bert.encoder.layer) == 6
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_layer_importance_of_a_multilabel_teacher_is_the_kl_of_each_yes_no_question(teacher):
    # Two sigmoid outputs answer two questions: the importance sums each label's Bernoulli KL. A
    # softmax across the two logits would score a layer whose removal moves both logits alike as 0.
    two = M.BertForSequenceClassification(M.BertConfig(**{**teacher.config.__dict__,
                                                          "problem_type": "multi_label_classification"}))
    two.load_state_dict(teacher.state_dict())
    two.eval()
    ids = torch.randint(5, 900, (4, 8))
    batch = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    scores = D.layer_importance(two, [batch])
    with torch.no_grad():
        for skip in (2, 5):
            without = D.make_student(two, [i for i in range(1, 7) if i != skip]).eval()
            p, q = torch.sigmoid(two(*batch).logits), torch.sigmoid(without(*batch).logits)
            kl = p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
            assert scores[skip - 1] == pytest.approx(kl.sum().item() / 4, rel=1e-4, abs=1e-7)
            # ... which is not what a softmax over the two logits would give
            ps, qs = torch.softmax(two(*batch).logits, -1), torch.softmax(without(*batch).logits, -1)
            assert scores[skip - 1] != pytest.approx((ps * (ps.log() - qs.log())).sum().item() / 4, rel=1e-2)


def test_a_layer_the_teacher_does_not_use_ranks_last(teacher):
    # Layer 4 made a no-op: its residual branches add zero and its LayerNorms are the identity on
    # the already normalised input it gets (LayerNorm of a LayerNorm output with weight 1, bias 0).
    t = D.make_student(teacher, list(range(1, 7))).eval()
    with torch.no_grad():
        for layer in t.bert.encoder.layer[2:4]:
            for ln in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
        noop = t.bert.encoder.layer[3]
        for dense in (noop.attention.output.dense, noop.output.dense):
            dense.weight.zero_()
            dense.bias.zero_()
    ids = torch.randint(5, 900, (4, 8))
    scores = D.layer_importance(t, [(ids, torch.ones_like(ids), torch.zeros_like(ids))])
    assert scores[3] == pytest.approx(0.0, abs=1e-6) and min(scores[:3] + scores[4:]) > 1e-5
    assert 4 not in D.parse_layers("auto", 6, scores)


@pytest.mark.parametrize("layers", [[1, 3, 5], [2, 4, 6], [1, 6]])
def test_student_copies_exactly_the_named_layers(teacher, layers):
    student = D.make_student(teacher, layers)
    assert student.config.num_hidden_layers == len(layers) and teacher.config.num_hidden_layers == 6
    t, s = teacher.state_dict(), student.state_dict()
    for key, value in s.items():
        if key.startswith("bert.encoder.layer."):
            i, rest = key[len("bert.encoder.layer."):].split(".", 1)
            source = f"bert.encoder.layer.{layers[int(i)] - 1}.{rest}"
        else:
            source = key  # embeddings, pooler, classifier
        assert torch.equal(value, t[source]), key
    # A copy, not shared storage: training the student must leave the teacher as it was.
    assert student.bert.embeddings.word_embeddings.weight.data_ptr() != teacher.bert.embeddings.word_embeddings.weight.data_ptr()


def test_student_runs_like_the_teacher_on_the_kept_path(teacher):
    # With every layer kept, the student is the teacher.
    student = D.make_student(teacher, [1, 2, 3, 4, 5, 6]).eval()
    ids = torch.randint(5, 900, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(student(ids, mask).logits, teacher(ids, mask).logits)


def test_soft_kl_against_hand_computation():
    s = torch.tensor([[1.0, 2.0], [0.5, -0.5]])
    t = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    T = 2.0
    want = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zs = [math.exp(x / T) for x in row_s]
        zt = [math.exp(x / T) for x in row_t]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        want += sum(p * math.log(p / q) for p, q in zip(pt, ps))
    want = want / 2 * T * T
    assert D.soft_kl(s, t, T).item() == pytest.approx(want, rel=1e-6)
    assert D.soft_kl(t, t, T).item() == pytest.approx(0.0, abs=1e-7)


def test_hidden_loss_against_hand_computation():
    # One layer kept (teacher layer 2 -> student layer 1), batch 1, 3 tokens of which 2 are real.
    s = [None, torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])]
    t = [None, None, torch.tensor([[[1.0, 1.0], [0.0, -1.0], [0.0, 1.0]]])]
    mask = torch.tensor([[1, 1, 0]])
    cos = (1 - 1 / math.sqrt(2)) + (1 - (-1))  # token 1: 45 degrees, token 2: opposite
    assert D.hidden_loss(s, t, [2], mask, "cosine").item() == pytest.approx(cos / 2, rel=1e-6)
    mse = ((0 + 1) / 2 + (0 + 9) / 2) / 2
    assert D.hidden_loss(s, t, [2], mask, "mse").item() == pytest.approx(mse, rel=1e-6)
    with pytest.raises(ValueError, match="expected 'cosine' or 'mse'"):
        D.hidden_loss(s, t, [2], mask, "l1")


def test_distill_loss_is_the_weighted_sum(teacher):
    student = D.make_student(teacher, [2, 4, 6]).train()
    ids = torch.randint(5, 900, (4, 7))
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    labels = torch.tensor([0, 1, 1, 0])
    t_out = D.teacher_forward(teacher, ids, mask)
    assert not teacher.training and t_out.logits.grad_fn is None  # eval mode, no graph
    s_out = student(ids, mask)
    loss, parts = D.distill_loss(s_out, t_out, labels, [2, 4, 6], mask, alpha=0.5, beta=0.3, gamma=0.2, T=3.0)
    want = 0.5 * parts["ce"] + 0.3 * parts["kl"] + 0.2 * parts["hidden"]
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert parts["ce"] == pytest.approx(torch.nn.functional.cross_entropy(s_out.logits, labels).item(), rel=1e-6)
    assert parts["hidden"] > 0  # dropout in the student makes it differ from the teacher
    loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_masked_loss_ignores_a_missing_label_exactly():
    # Text 0 annotates both labels, text 1 only hate (toxic -1): no gradient may reach logit [1, 0].
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]], requires_grad=True)
    labels = torch.tensor([[1, 0], [-1, 1]])
    loss = D.masked_bce(logits, labels)
    loss.backward()
    assert logits.grad[1, 0] == 0 and (logits.grad[0] != 0).all() and logits.grad[1, 1] != 0
    # The mean over the three annotated pairs, written out.
    by_hand = (torch.nn.functional.softplus(-logits[0, 0]) + torch.nn.functional.softplus(logits[0, 1])
               + torch.nn.functional.softplus(-logits[1, 1])) / 3
    assert loss.item() == pytest.approx(by_hand.item(), abs=1e-6)
    # Whatever the missing label's logit, the loss is the same.
    other = logits.detach().clone()
    other[1, 0] = -50.0
    assert D.masked_bce(other, labels).item() == pytest.approx(loss.item(), abs=1e-6)


def test_soft_binary_kl_masks_and_vanishes_when_student_equals_teacher():
    t = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    mask = torch.tensor([[True, True], [False, True]])
    assert D.soft_binary_kl(t, t, 2.0, mask).item() == pytest.approx(0.0, abs=1e-7)
    s = t.clone().requires_grad_(True)
    with torch.no_grad():
        s[1, 0] += 5.0  # only a masked label differs: still zero, and no gradient there
    loss = D.soft_binary_kl(s, t, 2.0, mask)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7) and s.grad[1, 0] == 0
    # One label by hand: KL of Bernoulli(sigmoid(t/T)) from Bernoulli(sigmoid(s/T)), times T^2.
    s2 = torch.tensor([[0.0, -2.0], [0.5, 3.0]])
    pt, ps = torch.sigmoid(torch.tensor(0.5)), torch.sigmoid(torch.tensor(0.0))
    kl = pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))
    assert D.soft_binary_kl(s2, t, 2.0, mask).item() == pytest.approx((kl * 4 / 3).item(), abs=1e-6)


def test_ensemble_logits_soften_to_the_mean_of_the_teachers_distributions():
    # Two classes, by hand: the ensemble's softmax at T is the mean of each teacher's softmax at T.
    a, b, T = [2.0, -1.0], [-3.0, 0.5], 2.0

    def softmax(z):
        e = [math.exp(x / T) for x in z]
        return [x / sum(e) for x in e]

    want = [(p + q) / 2 for p, q in zip(softmax(a), softmax(b))]
    z = D.ensemble_logits([torch.tensor([a]), torch.tensor([b])], T, multilabel=False)
    assert torch.softmax(z / T, -1)[0].tolist() == pytest.approx(want, rel=1e-6)
    # Per label: the mean yes-probability of sigmoid(z / T), each label on its own.
    ya, yb = [4.0, -2.0], [0.0, -6.0]
    want = [(1 / (1 + math.exp(-x / T)) + 1 / (1 + math.exp(-y / T))) / 2 for x, y in zip(ya, yb)]
    z = D.ensemble_logits([torch.tensor([ya]), torch.tensor([yb])], T, multilabel=True)
    assert torch.sigmoid(z / T)[0].tolist() == pytest.approx(want, rel=1e-6)


def test_an_ensemble_of_one_teacher_is_that_teacher_and_of_two_differs_from_either():
    z = torch.tensor([[30.0, -30.0, 0.1], [1.0, 2.0, 3.0]])  # confident logits do not overflow
    one = D.ensemble_logits([z], 2.0, multilabel=True)
    assert torch.allclose(one, z, atol=1e-4)
    one = D.ensemble_logits([z], 2.0, multilabel=False)
    assert torch.allclose(torch.softmax(one / 2, -1), torch.softmax(z / 2, -1), atol=1e-6)
    two = D.ensemble_logits([z, -z], 2.0, multilabel=True)
    assert torch.allclose(two, torch.zeros_like(z), atol=1e-4)  # two opposite teachers: no opinion


def test_ensemble_teacher_keeps_the_first_teachers_hidden_states(teacher):
    other = D.make_student(teacher, [1, 2, 3, 4, 5, 6])
    with torch.no_grad():
        other.classifier.weight.mul_(-1)
    ids = torch.tensor([[2, 11, 17, 3]])
    mask = torch.ones_like(ids)
    both = D.EnsembleTeacher([teacher, other], T=2.0).eval()
    with torch.no_grad():
        out, first, second = both(ids, mask), teacher(ids, mask), other(ids, mask)
    assert all(torch.equal(h, g) for h, g in zip(out.hidden_states, first.hidden_states))
    want = (torch.softmax(first.logits / 2, -1) + torch.softmax(second.logits / 2, -1)) / 2
    assert torch.allclose(torch.softmax(out.logits / 2, -1), want, atol=1e-6)
