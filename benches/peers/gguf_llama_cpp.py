"""llama.cpp peer of kiln-nlp's `gguf` benchmark: the same GGUF file, the same 128-token
prompt (token ids, no tokenizer involved), 128 new tokens by greedy decoding with the
end-of-sequence token ignored, 2 threads, through llama.cpp's server on loopback.

Two builds: the prebuilt `xllamacpp` wheel (AVX2, `pip install xllamacpp`), and a native
build of llama.cpp (AVX-512, see docs/benchmarks.md for the cmake commands) when
KILN_LLAMA_SERVER names its `llama-server` binary. Prefill and decode rates are
llama.cpp's own timings (`prompt_per_second`, `predicted_per_second`); medians over rounds
within KILN_BENCH_SECS. Prints JSON lines in the format of kiln-core's BenchResult.

    KILN_GGUF=FILE.gguf python benches/peers/gguf_llama_cpp.py
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

PROMPT = 128
NEW = 128


def prompt_ids(vocab):
    # The benchmark's fixed pseudo-random prompt (crates/nlp/benches/gguf.rs).
    return [(i * 2654435761 + 12345) % vocab for i in range(PROMPT)]


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())


def rounds(base, ids, budget):
    body = {"prompt": ids, "n_predict": NEW, "temperature": 0, "top_k": 1,
            "ignore_eos": True, "cache_prompt": False}
    post(base, "/completion", dict(body, n_predict=4))
    prefill, decode = [], []
    start = time.perf_counter()
    while len(decode) < 3 or time.perf_counter() - start < budget:
        t = post(base, "/completion", body)["timings"]
        assert t["predicted_n"] == NEW, t
        prefill.append(t["prompt_per_second"])
        decode.append(t["predicted_per_second"])
    return prefill, decode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    model = os.environ["KILN_GGUF"]
    threads = int(os.environ.get("KILN_PEER_THREADS", "2"))
    budget = float(os.environ.get("KILN_BENCH_SECS", "20"))
    vocab = int(os.environ.get("KILN_GGUF_VOCAB", "49152"))
    ids = prompt_ids(vocab)
    results = []
    native = os.environ.get("KILN_LLAMA_SERVER")
    if native:
        port = free_port()
        proc = subprocess.Popen(
            [native, "-m", model, "-t", str(threads), "-tb", str(threads), "-c", "1024",
             "-np", "1", "--host", "127.0.0.1", "--port", str(port), "--no-warmup"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            results.append(("llama.cpp native (AVX-512)", *rounds(base, ids, budget)))
        finally:
            proc.terminate()
            proc.wait()
    import xllamacpp
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_parallel = 1
    params.n_ctx = 1024
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    server = xllamacpp.Server(params)
    version = getattr(xllamacpp, "__version__", "?")
    results.append((f"xllamacpp {version} (AVX2 wheel)",
                    *rounds(server.listening_address, ids, budget)))
    for backend, prefill, decode in results:
        for name, rates, n in [("gguf_prefill_128", prefill, PROMPT),
                               ("gguf_decode_128", decode, NEW)]:
            rate = statistics.median(rates)
            print(json.dumps({
                "name": name, "backend": f"{backend}, {threads} threads",
                "iterations": len(rates), "median_secs": n / rate, "throughput": rate,
                "unit": "tokens", "tiny": False,
                "extra": {"range_tokens_per_second": [min(rates), max(rates)],
                          "model": os.path.basename(model)},
            }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
