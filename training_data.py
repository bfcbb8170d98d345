"""
The texts one run trains and validates on: the dataset its settings name, checked to have examples
of every class; the split manifest beside the runs (made once, then reused by every run of a
comparison, so they all see the same texts); the fixed subsets of a quick run; and, when asked for,
misspelt copies of real training texts (--perturb) and the texts of the training templates
(--augment), added to the training part only.

The test part is not loaded here: it is scored once, when the run is finished (train.finish).
"""

import json
from pathlib import Path

import corpus
import readers
import runs
import splits
from settings import Settings, TrainError


def load_data(s: Settings, run_dir: Path):
    """(dataset, {'train', 'validation'} parts, manifest): the split manifest beside the runs is made once and reused."""
    label_map = json.loads(s.label_map) if isinstance(s.label_map, str) else s.label_map
    dataset = corpus.load_dataset(s.data, mirror=s.data_mirror, three_class=s.three_class, normalize=s.normalize,
                                  text_column=s.text_column, label_column=s.label_column, label_map=label_map,
                                  multilabel=s.multilabel)
    for note in dataset.notes:
        print(f"{s.data}: {note}")
    counts = dataset.class_counts()
    learns_labels = s.method != "pretrain"  # masked-LM pretraining reads the texts alone
    if dataset.multilabel and not s.augment and learns_labels:  # every question needs a yes and a no somewhere
        check_questions(f"--data {s.data}", counts)
    elif not dataset.multilabel and (sum(c > 0 for c in counts) < 2 or 0 in counts):
        raise TrainError(f"--data {s.data}: classes {dict(zip(dataset.label_names, counts, strict=True))}; expected at "
                         "least two classes, each with examples (labels 0..K-1, or --label-map)")
    s.split = split_path(s, run_dir)
    parts = splits.get_split(dataset, s.split, seed=s.split_seed)
    manifest = splits.load_manifest(s.split)
    if not len(parts["validation"]) or not len(parts["train"]):
        raise TrainError(f"--data {s.data}: {len(dataset)} texts leave {len(parts['train'])} for training and "
                         f"{len(parts['validation'])} for validation; expected some in each (more data)")
    # Subsets for quick runs, the same for every model of a comparison with the same settings.
    parts = {"train": runs.subset_for_quick_runs(parts["train"], s.max_train, s.split_seed),
             "validation": runs.subset_for_quick_runs(parts["validation"], s.max_val, s.split_seed)}
    if s.perturb:
        parts["train"] = with_perturbed_copies(s, parts["train"])
    if s.augment:  # the templates may give a question the yes or no its dataset lacks (hate_speech18: toxic no)
        parts["train"] = with_augmentation(s, dataset, parts["train"])
        if learns_labels:
            check_questions(f"--data {s.data} with --augment {s.augment}", parts["train"].class_counts())
    return dataset, parts, manifest


def check_questions(what: str, counts: dict):
    """Each question of a two-question dataset needs a yes and a no to learn from."""
    if any(yes == 0 or no == 0 for no, yes, _ in counts.values()):
        raise TrainError(f"{what}: labels {counts} (no, yes, not annotated); expected yes and no for each")


def split_path(s: Settings, run_dir: Path) -> str:
    """--split, or split.json beside the run folder: one manifest for the runs of a comparison."""
    return str(s.split or Path(run_dir).parent / "split.json")


def with_perturbed_copies(s: Settings, train_part):
    """The training part plus misspelt copies of a share (--perturb) of its texts (augment.perturbed_copies)."""
    import augment

    texts, labels = augment.perturbed_copies(train_part.texts, train_part.labels, s.perturb, seed=s.seed)
    print(f"--perturb {s.perturb:g}: {len(texts)} misspelt copies added to the {len(train_part)} training texts")
    return with_texts(train_part, texts, labels, "perturbed")


def with_augmentation(s: Settings, dataset, train_part):
    """The training part plus the texts of the augmentation templates (--augment): never in validation
    or test, and none that the dataset itself holds (which could be a validation or test text)."""
    import augment  # only runs that ask for it need the templates

    if not dataset.multilabel or list(dataset.label_names) != readers.TWO_LABELS:
        raise TrainError(f"--augment {s.augment}: gives {readers.TWO_LABELS} labels; expected a two-question dataset "
                         f"(e.g. --data davidson+hate_speech18), not {list(dataset.label_names)}")
    try:
        pairs = augment.load_augment(s.augment, seed=s.seed)
    except (OSError, ValueError) as e:
        raise TrainError(f"--augment {s.augment}: {e}") from None
    known = set(dataset.texts)
    pairs = [(text, labels) for text, labels in pairs if text not in known]
    print(f"--augment {s.augment}: {len(pairs)} template texts added to the {len(train_part)} training texts")
    return with_texts(train_part, [t for t, _ in pairs], [list(y) for _, y in pairs], "augment")


def with_texts(part, texts, labels, source: str):
    """The part with more texts and their labels after its own, each of them from `source`."""
    sources = (part.sources or [part.name] * len(part)) + [source] * len(texts)
    return readers.Dataset(part.name, part.texts + texts, part.labels + labels, part.label_names, sources=sources)

