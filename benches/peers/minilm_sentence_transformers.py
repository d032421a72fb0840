"""sentence-transformers peer of kiln-nlp's `embed` benchmark: all-MiniLM-L6-v2 embeddings of
the 1,000 sentences in `reference/bench-sentences-1000.txt` at batch 32, PyTorch with 2
threads, model loading excluded. Prints JSON lines in the format of kiln-core's BenchResult.

Run by `cargo xtask bench` when `python3 -c "import sentence_transformers"` works and
KILN_MODELS points at the models folder (the reference folder is its sibling).
"""
import json
import os
import statistics
import sys
import time

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer


def main():
    models = os.environ.get("KILN_MODELS")
    if not models:
        sys.exit("KILN_MODELS is not set")
    torch.set_num_threads(int(os.environ.get("KILN_PEER_THREADS", "2")))
    model = SentenceTransformer(os.path.join(models, "all-MiniLM-L6-v2"), device="cpu")
    path = os.path.join(models, "..", "reference", "bench-sentences-1000.txt")
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    model.encode(texts[:64], batch_size=32)
    times = []
    budget = float(os.environ.get("KILN_BENCH_SECS", "3"))
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        model.encode(texts, batch_size=32)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "name": "minilm_embed_1000_b32",
        "backend": f"sentence-transformers {sentence_transformers.__version__} "
                   f"(torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "iterations": len(times),
        "median_secs": median,
        "throughput": len(texts) / median,
        "unit": "sentences",
        "tiny": False,
        "extra": {},
    }))


if __name__ == "__main__":
    main()
