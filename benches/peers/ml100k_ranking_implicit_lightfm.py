"""implicit and LightFM peers of kiln-recsys's `ranking` benchmark: MovieLens 100K top-10
ranking on exactly the splits Kiln's benchmark wrote (target/bench/ml100k-ranking/seed{0,1,2}/
train.tsv and test.tsv, dense `user item rating` rows): models fitted on the training ratings
>= 4 (as implicit feedback), every list leaving out the user's training items, relevant = held-out
ratings >= 4, metrics averaged over users with a relevant item, then over the seeds. The
metric definitions are Kiln's (crates/recsys/src/metrics/ranking.rs).

Cases (names match Kiln's): implicit 0.7 ALS (64 factors, 15 iterations), implicit BPR (64
factors, 100 iterations), LightFM WARP (64 components, 30 epochs, learning rate 0.05,
max_sampled 10). Fit seconds are the median over the seeds; threads follow KILN_PEER_THREADS
(default 2, as the CI machine).

Run by `cargo xtask bench` after the Rust benchmarks (pip install implicit; LightFM 1.17 needs
a patched setup.py on Python 3.11, see docs/benchmarks.md). Prints JSON lines in the format of
kiln-core's BenchResult; exits non-zero (skipped) without the splits or the libraries.
"""
import json
import math
import os
import statistics
import sys
import time

THREADS = int(os.environ.get("KILN_PEER_THREADS", "2"))
# implicit asks for single-threaded BLAS (it parallelises over users itself); set before numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def load(path):
    a = np.loadtxt(path, dtype=np.float64, ndmin=2)
    return a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.float32)


def metrics(ranked, relevant, k):
    hits = [i in relevant for i in ranked[:k]]
    n = sum(hits)
    dcg = sum(1 / math.log2(p + 2) for p, h in enumerate(hits) if h)
    ideal = sum(1 / math.log2(p + 2) for p in range(min(len(relevant), k)))
    return n / k, n / len(relevant), dcg / ideal


def evaluate(scores_of, train, test, n_items, k=10, threshold=4.0):
    tu, ti, _ = train
    seen = {}
    for u, i in zip(tu, ti):
        seen.setdefault(int(u), []).append(int(i))
    relevant = {}
    for u, i, r in zip(*test):
        if r >= threshold:
            relevant.setdefault(int(u), set()).add(int(i))
    sums = np.zeros(3)
    for u in sorted(relevant):
        s = np.asarray(scores_of(u), dtype=np.float32)[:n_items].copy()
        s[seen.get(u, [])] = -np.inf
        top = np.argpartition(-s, k)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        sums += metrics([int(i) for i in top], relevant[u], k)
    return sums / max(len(relevant), 1)


def implicit_model(kind, seed):
    import implicit

    if kind == "als":
        return implicit.cpu.als.AlternatingLeastSquares(
            factors=64, iterations=15, regularization=0.01, random_state=seed,
            num_threads=THREADS, calculate_training_loss=False)
    return implicit.cpu.bpr.BayesianPersonalizedRanking(
        factors=64, iterations=100, random_state=seed, num_threads=THREADS)


def fit_implicit(kind, seed, positives, n_users, n_items):
    model = implicit_model(kind, seed)
    t = time.perf_counter()
    model.fit(positives, show_progress=False)
    fit = time.perf_counter() - t
    uf = np.asarray(model.user_factors)
    itf = np.asarray(model.item_factors)
    return fit, lambda u: itf @ uf[u]


def fit_lightfm(seed, positives, n_users, n_items):
    from lightfm import LightFM

    model = LightFM(no_components=64, loss="warp", learning_rate=0.05, max_sampled=10,
                    random_state=seed)
    t = time.perf_counter()
    model.fit(positives.tocoo(), epochs=30, num_threads=THREADS)
    fit = time.perf_counter() - t
    items = np.arange(n_items, dtype=np.int32)
    return fit, lambda u: model.predict(u, items, num_threads=1)


def main():
    import implicit  # noqa: F401  (fail early, so the script is skipped)
    import lightfm  # noqa: F401

    root = os.environ.get("KILN_BENCH_SPLITS", "target/bench/ml100k-ranking")
    if not os.path.exists(os.path.join(root, "seed0", "train.tsv")):
        sys.exit(f"no splits under {root}: run the Rust `ranking` benchmark first")
    cases = {"ml100k_ranking_als": [], "ml100k_ranking_bpr": [], "ml100k_ranking_warp": []}
    for seed in (0, 1, 2):
        train = load(os.path.join(root, f"seed{seed}", "train.tsv"))
        test = load(os.path.join(root, f"seed{seed}", "test.tsv"))
        n_users = int(max(train[0].max(), test[0].max())) + 1
        n_items = int(max(train[1].max(), test[1].max())) + 1
        keep = train[2] >= 4.0
        positives = sp.csr_matrix(
            (np.ones(keep.sum(), dtype=np.float32), (train[0][keep], train[1][keep])),
            shape=(n_users, n_items))
        for name, fit in (
            ("ml100k_ranking_als", lambda: fit_implicit("als", seed, positives, n_users, n_items)),
            ("ml100k_ranking_bpr", lambda: fit_implicit("bpr", seed, positives, n_users, n_items)),
            ("ml100k_ranking_warp", lambda: fit_lightfm(seed, positives, n_users, n_items)),
        ):
            seconds, scores_of = fit()
            cases[name].append((seconds, evaluate(scores_of, train, test, n_items)))
    peers = {"ml100k_ranking_als": "implicit", "ml100k_ranking_bpr": "implicit",
             "ml100k_ranking_warp": "lightfm"}
    for name, runs in cases.items():
        m = np.mean([r[1] for r in runs], axis=0)
        print(json.dumps({
            "name": name,
            "backend": peers[name],
            "iterations": len(runs),
            "median_secs": statistics.median(r[0] for r in runs),
            "throughput": None,
            "unit": None,
            "tiny": False,
            "extra": {
                "precision_at_10": m[0], "recall_at_10": m[1], "ndcg_at_10": m[2],
                "precision_at_10_per_seed": [r[1][0] for r in runs],
                "threads": THREADS,
            },
        }))


if __name__ == "__main__":
    main()
