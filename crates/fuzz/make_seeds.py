"""Writes the seed inputs of the fuzz targets into seeds/<target>/: small valid files of
each format, made up here (no data set is copied), so that libFuzzer starts from inputs
that parse and mutates them into ones that almost do. Run from this folder:
python3 make_seeds.py
"""

import json
import os
import struct

SEP = b"\x00\xff\x00"


def write(target, name, data):
    os.makedirs(os.path.join("seeds", target), exist_ok=True)
    with open(os.path.join("seeds", target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# IDX: 2 images of 3 x 3, and 2 labels.
write("idx", "images", struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(range(18)))
write("idx", "labels", struct.pack(">II", 0x801, 2) + bytes([3, 7]))

# Rating files in the three MovieLens layouts.
write("ratings_csv", "u.data", "1\t2\t5\t881250949\n2\t3\t3\t891717742\n1\t3\t4\t881251000\n")
write("ratings_csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n2,2,4.0,1112484676\n")
write("ratings_csv", "ratings.dat", "1::2::5::978300760\n2::1::3::978302109\n")

# A MovieLens 100K folder: u.data, u.item (Latin-1), u.user.
genres = "|".join(["0"] * 18 + ["1"])
items = (
    f"1|A Film (1995)|01-Jan-1995||http://example.org/1|{genres}\n"
    f"2|Les Mis\xe9rables (1995)|||http://example.org/2|{genres}\n"
    f"3|Another (1994)|01-Jan-1994||http://example.org/3|{genres}\n"
).encode("latin-1")
users = b"1|24|M|technician|85711\n2|53|F|other|94043\n"
ratings = b"1\t1\t5\t881250949\n2\t3\t3\t891717742\n1\t2\t4\t881251000\n"
write("movielens_dir", "ml", ratings + SEP + items + SEP + users)

# TREC, SMS Spam, Tatoeba lines.
write("text_datasets", "trec", "NUM:dist How far is it from the city to the sea ?\nLOC:city What town is this in ?\n")
write("text_datasets", "sms", "ham\tSee you at the station at six\nspam\tYou have WON a prize , call now\n")
write("text_datasets", "tatoeba", "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org\nHi.\tSalut !\tCC-BY 2.0\n")

# A BERT config.json and a safetensors file holding one [2, 2] f32 tensor.
config = {
    "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2,
    "hidden_act": "gelu", "model_type": "bert",
}
header = json.dumps(
    {"embeddings.LayerNorm.weight": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}
).encode()
tensors = struct.pack("<Q", len(header)) + header + struct.pack("<8f", *[1.0] * 8)
write("bert_files", "bert", json.dumps(config).encode() + SEP + tensors)

# Saved recommenders: a training set of 2 users x 2 items, and models over it.
train = {
    "num_users": 2, "num_items": 2, "global_mean": 3.5, "scale": [3.0, 4.0],
    "user_ptr": [0, 1, 2], "user_items": [0, 1], "user_ratings": [3.0, 4.0],
    "item_ptr": [0, 1, 2], "item_users": [0, 1], "item_ratings": [3.0, 4.0],
}
svd = {
    "train": train, "factors": 1, "user_bias": [0.1, -0.1], "item_bias": [0.2, -0.2],
    "user_factors": [0.5, 0.25], "item_factors": [0.3, -0.4],
}
envelope = lambda kind, model: json.dumps({"kind": kind, "version": 1, "model": model})
write("saved_models", "svd", envelope("svd", svd))
write("saved_models", "global_mean", envelope("global-mean", {"train": train}))
write("saved_models", "popularity", envelope("popularity", {"train": train, "counts": [1.0, 1.0]}))
write("saved_models", "blend", envelope(
    "blend", {"members": [{"Svd": svd}], "weights": [0.0, 1.0], "valid_rmse": 1.0}))
write("saved_models", "any", envelope("any", {"Svd": svd}))

# A semantic index of two 3-dimensional vectors.
vectors = struct.pack("<6f", 1.0, 0.0, 0.0, 0.0, 0.6, 0.8)
write("semantic_index", "index", b"KILNIDX1" + struct.pack("<IQ", 3, 2) + vectors
      + json.dumps(["east", "north"]).encode())

# GGUF seeds are binary files, so they are not committed: kiln-nlp's test
# `the_fuzz_seed_is_a_working_model_with_a_tokenizer` (crates/nlp/tests/gguf_files.rs) builds
# them, checks that they load and tokenize, and writes them into seeds/gguf/ when
# KILN_FUZZ_SEEDS names that folder, as `cargo xtask fuzz` does before fuzzing.
print("seeds written")
