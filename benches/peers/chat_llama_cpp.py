"""llama.cpp's server as the peer of `cargo xtask load --chat --peer`: the prebuilt
`xllamacpp` wheel (AVX2) serving FILE with SLOTS parallel slots (continuous batching) in a
context of CONTEXT tokens shared by the slots, 2 threads, on loopback. Prints
`listening on URL` and serves until killed; its OpenAI-shaped `/v1/chat/completions` renders
the file's chat template.

    python benches/peers/chat_llama_cpp.py FILE.gguf 16 8192
"""
import signal
import sys
import time

import xllamacpp


def main():
    model, slots, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_parallel = slots
    params.n_ctx = context
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.warmup = False
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
