"""implicit and LightFM on the interactions `recsys_scale --export DIR` wrote (users.u32,
items.u32, meta.json): fit time per iteration and peak resident memory of one model, printed
as one JSON line (the fields of recsys_scale's report). For ALS and BPR
`iteration_seconds` are implicit's own per-iteration times (its fit callback, no setup). One
model per process, so that the
peak memory is that model's: `cargo xtask bench` runs it once per (size, model) beside Kiln's
runs on the same data (`xtask/src/scale.rs`).

  python3 benches/peers/scale/implicit_lightfm_scale.py --dir DIR --model als|bpr|warp \
      [--iterations 3] [--factors 64] [--threads 2]

implicit 0.7: AlternatingLeastSquares (conjugate gradient, 3 steps) and
BayesianPersonalizedRanking, `iterations` passes; LightFM 1.17: WARP, `iterations` epochs,
max_sampled 10, learning rate 0.05.
"""
import argparse
import json
import os
import resource
import time

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--model", required=True, choices=["als", "bpr", "warp"])
parser.add_argument("--iterations", type=int, default=3)
parser.add_argument("--factors", type=int, default=64)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

# implicit parallelises over users itself and asks for single-threaded BLAS; set before numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

t = time.perf_counter()
meta = json.load(open(os.path.join(args.dir, "meta.json")))
users = np.fromfile(os.path.join(args.dir, "users.u32"), dtype="<u4")
items = np.fromfile(os.path.join(args.dir, "items.u32"), dtype="<u4")
shape = (meta["users"], meta["items"])
data = np.ones(len(users), dtype=np.float32)
load_seconds = time.perf_counter() - t

if args.model == "warp":
    from lightfm import LightFM

    matrix = sp.coo_matrix((data, (users, items)), shape=shape)
    del users, items, data
    model = LightFM(no_components=args.factors, loss="warp", learning_rate=0.05, max_sampled=10,
                    random_state=0)
    t = time.perf_counter()
    model.fit(matrix, epochs=args.iterations, num_threads=args.threads)
    fit = time.perf_counter() - t
    peer = "lightfm"
    iteration_seconds = []
else:
    import implicit

    matrix = sp.csr_matrix((data, (users, items)), shape=shape)
    del users, items, data
    if args.model == "als":
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=args.factors, iterations=args.iterations, regularization=0.01,
            random_state=0, num_threads=args.threads, calculate_training_loss=False)
    else:
        model = implicit.cpu.bpr.BayesianPersonalizedRanking(
            factors=args.factors, iterations=args.iterations, random_state=0,
            num_threads=args.threads)
    iteration_seconds = []
    t = time.perf_counter()
    model.fit(matrix, show_progress=False,
              callback=lambda _it, elapsed, *_: iteration_seconds.append(elapsed))
    fit = time.perf_counter() - t
    peer = "implicit"

print(json.dumps({
    "model": args.model,
    "peer": peer,
    "interactions": int(matrix.nnz),
    "users": shape[0],
    "items": shape[1],
    "threads": args.threads,
    "iterations": args.iterations,
    "load_seconds": load_seconds,
    "fit_seconds": fit,
    "seconds_per_iteration": fit / args.iterations,
    "iteration_seconds": iteration_seconds,
    "median_iteration_seconds":
        sorted(iteration_seconds)[len(iteration_seconds) // 2] if iteration_seconds else None,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
