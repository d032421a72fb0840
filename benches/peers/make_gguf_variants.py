"""Writes F32 and BF16 copies of a GGUF file (every quantized tensor dequantized by gguf-py,
then stored as F32 or rounded to BF16; norms stay F32; metadata copied), for the decoder
benchmark's float rows beside llama.cpp on the same bytes per weight.

    pip install gguf numpy
    python benches/peers/make_gguf_variants.py IN.gguf OUT_DIR
"""
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import dequantize, quantize


def copy(src, dst, target):
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kinds = field.types
        value = field.contents()
        if key == "general.file_type":
            value = 0 if target == T.F32 else 32
        if kinds[0] == V.ARRAY:
            writer.add_key_value(key, value, V.ARRAY, sub_type=kinds[1])
        else:
            writer.add_key_value(key, value, kinds[0])
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        ty = target if len(shape) == 2 else T.F32
        data = values if ty == T.F32 else quantize(values, ty)
        writer.add_tensor(t.name, data, raw_shape=shape if ty == T.F32 else None, raw_dtype=ty)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    src, out = sys.argv[1], sys.argv[2]
    base = os.path.splitext(os.path.basename(src))[0].rsplit(".", 1)[0]
    for name, ty in [("F32", T.F32), ("BF16", T.BF16)]:
        dst = os.path.join(out, f"{base}.{name}.gguf")
        copy(src, dst, ty)
        print(dst, os.path.getsize(dst))
