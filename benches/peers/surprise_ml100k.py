"""Surprise peer of kiln-recsys's `movielens` benchmark: 5-fold cross-validation on
MovieLens 100K for the same model families with the same names, fit seconds per fold (median),
RMSE, MAE and the whole run's seconds. Prints JSON lines in the format of kiln-core's
BenchResult.

Run by `cargo xtask bench` when `python3 -c "import surprise"` works (pip install
scikit-surprise) and KILN_DATA points at the folder holding ml-100k. Set
KILN_SURPRISE_SKIP_SVDPP=1 to leave out SVD++ (about 20 s per fold).
"""
import json
import os
import statistics
import sys
import time

import surprise
from surprise import BaselineOnly, Dataset, KNNBaseline, KNNBasic, KNNWithMeans, Reader, SVD, SVDpp
from surprise import accuracy
from surprise.model_selection import KFold


def main():
    root = os.environ.get("KILN_DATA")
    if not root:
        sys.exit("KILN_DATA is not set")
    path = os.path.join(root, "ml-100k", "u.data")
    data = Dataset.load_from_file(path, reader=Reader("ml-100k"))
    cases = [
        ("ml100k_baseline_5fold", lambda: BaselineOnly(verbose=False)),
        ("ml100k_knn_basic_5fold", lambda: KNNBasic(verbose=False)),
        (
            "ml100k_knn_baseline_item_5fold",
            lambda: KNNBaseline(
                sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
            ),
        ),
        (
            "ml100k_knn_means_item_pearson_5fold",
            lambda: KNNWithMeans(sim_options={"name": "pearson", "user_based": False}, verbose=False),
        ),
        ("ml100k_svd_5fold", lambda: SVD(random_state=0)),
        ("ml100k_svd_surprise_params_5fold", lambda: SVD(random_state=0)),
    ]
    if not os.environ.get("KILN_SURPRISE_SKIP_SVDPP"):
        cases.append(("ml100k_svdpp_5fold", lambda: SVDpp(random_state=0)))
    for name, make in cases:
        start = time.perf_counter()
        fits, rmses, maes = [], [], []
        for train, test in KFold(n_splits=5, random_state=0).split(data):
            algo = make()
            t = time.perf_counter()
            algo.fit(train)
            fits.append(time.perf_counter() - t)
            predictions = algo.test(test)
            rmses.append(accuracy.rmse(predictions, verbose=False))
            maes.append(accuracy.mae(predictions, verbose=False))
        total = time.perf_counter() - start
        median = statistics.median(fits)
        print(json.dumps({
            "name": name,
            "backend": f"surprise {surprise.__version__}",
            "iterations": len(fits),
            "median_secs": median,
            "throughput": 80_000 / median,
            "unit": "ratings",
            "tiny": False,
            "extra": {
                "rmse": statistics.mean(rmses),
                "mae": statistics.mean(maes),
                "total_seconds": total,
            },
        }), flush=True)


if __name__ == "__main__":
    main()
