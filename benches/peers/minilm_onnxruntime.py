"""ONNX Runtime peer of kiln-nlp's `embed` benchmark: all-MiniLM-L6-v2 embeddings of the 1,000
sentences in `reference/bench-sentences-1000.txt` at batch 32 (padded batches, mean pooling,
normalised), 2 intra-op threads, fp32 or, with KILN_PEER_PRECISION=int8, the model after
`onnxruntime.quantization.quantize_dynamic` (8-bit weights, activations quantized per call).
Prints one JSON line in the format of kiln-core's BenchResult.

No torch here, so the graph is written from `model.safetensors` with `onnx.helper`, in the
shapes a transformers export has (opset 17: LayerNormalization, the erf GELU, attention as
MatMul / Softmax with an additive mask); ONNX Runtime's graph optimisations are on
(ORT_ENABLE_ALL). Before timing, the fp32 graph's embeddings are checked against
`reference/minilm-embeddings.json` (within 1e-4), so the graph is the model.

    pip install onnxruntime onnx safetensors tokenizers numpy
    KILN_MODELS=../shared/models python3 benches/peers/minilm_onnxruntime.py
"""
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def build_graph(weights, config):
    h, heads = config["hidden_size"], config["num_attention_heads"]
    d, eps = h // heads, config.get("layer_norm_eps", 1e-12)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def dense(x, prefix, name):
        w = const(prefix + ".w", weights[prefix + ".weight"].T.copy())
        b = const(prefix + ".b", weights[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, w], name + "_mm"), b], name)

    def layer_norm(x, prefix, name):
        g = const(prefix + ".g", weights[prefix + ".weight"])
        b = const(prefix + ".b", weights[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], name, axis=-1, epsilon=eps)

    word = const("word", weights["embeddings.word_embeddings.weight"])
    pos = const("pos", weights["embeddings.position_embeddings.weight"])
    typ = const("typ", weights["embeddings.token_type_embeddings.weight"][0])
    x = node("Add", [node("Gather", [word, "input_ids"], "e_word"),
                     node("Gather", [pos, "position_ids"], "e_pos")], "e_sum")
    x = layer_norm(node("Add", [x, typ], "e_all"), "embeddings.LayerNorm", "e_ln")
    # Additive mask [B, 1, 1, T]: 0 on tokens, a large negative on padding.
    m = node("Cast", ["attention_mask"], "m_f", to=TensorProto.FLOAT)
    m = node("Unsqueeze", [m, const("ax12", np.array([1, 2], dtype=np.int64))], "m_4d")
    m = node("Mul", [node("Sub", [const("one", np.float32(1.0)), m], "m_inv"),
                     const("neg", np.float32(-1e4))], "m_add")
    split = const("split_shape", np.array([0, 0, heads, d], dtype=np.int64))
    merge = const("merge_shape", np.array([0, 0, h], dtype=np.int64))
    scale = const("scale", np.float32(1.0 / np.sqrt(d)))
    for l in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{l}."

        def heads_of(name, perm):
            r = node("Reshape", [dense(x, p + "attention.self." + name, f"l{l}_{name}"), split],
                     f"l{l}_{name}_r")
            return node("Transpose", [r], f"l{l}_{name}_t", perm=perm)

        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])
        v = heads_of("value", [0, 2, 1, 3])
        s = node("Mul", [node("MatMul", [q, k], f"l{l}_qk"), scale], f"l{l}_s")
        a = node("Softmax", [node("Add", [s, m], f"l{l}_sm")], f"l{l}_p", axis=-1)
        c = node("Transpose", [node("MatMul", [a, v], f"l{l}_pv")], f"l{l}_ct", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, merge], f"l{l}_c")
        o = dense(c, p + "attention.output.dense", f"l{l}_o")
        x = layer_norm(node("Add", [o, x], f"l{l}_res1"), p + "attention.output.LayerNorm",
                       f"l{l}_ln1")
        i = dense(x, p + "intermediate.dense", f"l{l}_i")
        # GELU, erf form: x · 0.5 · (1 + erf(x / sqrt 2)).
        e = node("Erf", [node("Div", [i, const(f"sqrt2_{l}", np.float32(np.sqrt(2.0)))],
                              f"l{l}_div")], f"l{l}_erf")
        e = node("Add", [e, const(f"one_{l}", np.float32(1.0))], f"l{l}_erf1")
        g = node("Mul", [node("Mul", [i, e], f"l{l}_g0"), const(f"half_{l}", np.float32(0.5))],
                 f"l{l}_gelu")
        o = dense(g, p + "output.dense", f"l{l}_out")
        x = layer_norm(node("Add", [o, x], f"l{l}_res2"), p + "output.LayerNorm", f"l{l}_ln2")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["B", "T"])
           for n in ("input_ids", "attention_mask", "position_ids")]
    out = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["B", "T", h])]
    graph = helper.make_graph(nodes, "minilm", ids, out, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main():
    models = os.environ.get("KILN_MODELS")
    if not models:
        sys.exit("KILN_MODELS is not set")
    folder = os.path.join(models, "all-MiniLM-L6-v2")
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    precision = os.environ.get("KILN_PEER_PRECISION", "fp32")
    if precision not in ("fp32", "int8"):
        sys.exit("KILN_PEER_PRECISION: fp32 or int8")
    work = tempfile.mkdtemp()
    fp32_path = os.path.join(work, "minilm.onnx")
    onnx.save(build_graph(load_file(os.path.join(folder, "model.safetensors")), config),
              fp32_path)
    path = fp32_path
    if precision == "int8":
        path = os.path.join(work, "minilm-int8.onnx")
        quantize_dynamic(fp32_path, path, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("KILN_PEER_THREADS", "2"))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding(pad_id=0)

    def encode(texts, batch):
        out = []
        for i in range(0, len(texts), batch):
            enc = tokenizer.encode_batch(texts[i:i + batch])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape)
            hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                        "position_ids": np.ascontiguousarray(positions)})[0]
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out)

    with open(os.path.join(models, "..", "reference", "minilm-embeddings.json")) as f:
        reference = json.load(f)["sentences"]
    got = encode([s["sentence"] for s in reference], 5)
    want = np.array([s["embedding"] for s in reference], dtype=np.float32)
    worst = float(np.abs(got - want).max())
    if precision == "fp32" and worst > 1e-4:
        sys.exit(f"the ONNX graph is not the model: {worst} from the reference embeddings")
    path = os.path.join(models, "..", "reference", "bench-sentences-1000.txt")
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    encode(texts[:64], 32)
    times = []
    budget = float(os.environ.get("KILN_BENCH_SECS", "3"))
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        encode(texts, 32)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "name": "minilm_embed_1000_b32",
        "backend": f"onnxruntime {ort.__version__} {precision} "
                   f"({options.intra_op_num_threads} threads)",
        "iterations": len(times),
        "median_secs": median,
        "throughput": len(texts) / median,
        "unit": "sentences",
        "tiny": False,
        "extra": {"range_secs": [min(times), max(times)],
                  "max_abs_vs_reference": worst},
    }))


if __name__ == "__main__":
    main()
