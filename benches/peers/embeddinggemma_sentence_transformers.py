"""sentence-transformers peer of kiln-nlp's `embed` benchmark, case
`embeddinggemma_embed_256_b32`: EmbeddingGemma-300M embeddings of the first 256 sentences of
`reference/bench-sentences-1000.txt` at batch 32, PyTorch in float32 with 2 threads, model
loading excluded. Prints JSON lines in the format of kiln-core's BenchResult.

Run by `cargo xtask bench` when sentence-transformers is installed, KILN_MODELS points at the
models folder (the reference folder is its sibling) and KILN_EMBEDDINGGEMMA names the
EmbeddingGemma folder (crates/nlp/tests/fixtures/embeddinggemma/make_reference.py says where
it comes from).
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
    folder = os.environ.get("KILN_EMBEDDINGGEMMA")
    if not models or not folder:
        sys.exit("KILN_MODELS or KILN_EMBEDDINGGEMMA is not set")
    torch.set_num_threads(int(os.environ.get("KILN_PEER_THREADS", "2")))
    model = SentenceTransformer(folder, device="cpu")
    path = os.path.join(models, "..", "reference", "bench-sentences-1000.txt")
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()][:256]
    model.encode(texts[:32], batch_size=32)
    times = []
    budget = float(os.environ.get("KILN_BENCH_SECS", "3"))
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        model.encode(texts, batch_size=32)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "name": "embeddinggemma_embed_256_b32",
        "backend": f"sentence-transformers {sentence_transformers.__version__} "
                   f"(torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "iterations": len(times),
        "median_secs": median,
        "throughput": len(texts) / median,
        "unit": "sentences",
        "tiny": False,
        "extra": {"range_secs": [min(times), max(times)]},
    }))


if __name__ == "__main__":
    main()
