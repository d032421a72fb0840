"""transformers peer of kiln-nlp's `decoder` benchmark: a randomly initialised Llama with
SmolLM2-135M's shapes (576 hidden, 30 layers, 9 heads / 3 KV heads, 1,536 intermediate,
49,152 vocabulary, tied embeddings), f32 on the CPU, batch 1, a 128-token prompt, 128 new
tokens by greedy `generate` (EOS disabled so every run decodes 128), PyTorch with 2 threads.

Prefill: one forward pass over the prompt with the cache on (what `generate` does first).
Decode: (generate's time - prefill time) / 127 decoded steps, the first new token coming
from the prefill. Medians over rounds within KILN_BENCH_SECS. Prints JSON lines in the
format of kiln-core's BenchResult. Run by `cargo xtask bench` when transformers imports.
"""
import json
import os
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

PROMPT = 128
NEW = 128


def config():
    return LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def main():
    threads = int(os.environ.get("KILN_PEER_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config()).eval()
    ids = torch.randint(0, 49152, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                  eos_token_id=None, pad_token_id=0)
    budget = float(os.environ.get("KILN_BENCH_SECS", "20"))
    prefill, total = [], []
    with torch.inference_mode():
        model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                       pad_token_id=0)
        start = time.perf_counter()
        while len(total) < 3 or time.perf_counter() - start < budget:
            t = time.perf_counter()
            model(ids, attention_mask=mask, use_cache=True)
            prefill.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, **kwargs)
            total.append(time.perf_counter() - t)
            assert out.shape[1] == PROMPT + NEW
    p = statistics.median(prefill)
    d = (statistics.median(total) - p) / (NEW - 1)
    backend = (f"transformers {transformers.__version__} (torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads)")
    for name, median, throughput, extra in [
        ("smollm2_shape_prefill_128", p, PROMPT / p, {"range_secs": [min(prefill), max(prefill)]}),
        ("smollm2_shape_decode_128", d * NEW, 1.0 / d,
         {"generate_secs": statistics.median(total), "rounds": len(total)}),
    ]:
        print(json.dumps({
            "name": name, "backend": backend, "iterations": len(total),
            "median_secs": median, "throughput": throughput, "unit": "tokens",
            "tiny": False, "extra": extra,
        }))


if __name__ == "__main__":
    main()
