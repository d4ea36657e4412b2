"""Tiny TensorFlow SavedModels, built by a script run under the "tf" toolchain's Python.

TensorFlow is not in onnxg's environment, so ``BUILD`` runs in the toolchain that
``onnxg.convert.toolchain.ensure("tf")`` provides (created on first use; the tests share it
through ONNXG_TOOLCHAINS). Each model lands in ``<folder>/<kind>/saved_model`` with
``<folder>/<kind>/expected.json``: TensorFlow's own outputs on ``TEXTS`` (or on seeded
inputs for the dense model), so tests can compare without TensorFlow.

Models: ``dense`` (float [n, 4] -> float [n, 3]); ``text`` (a Keras ``TextVectorization``
front end + embedding + mean -> [n, 8]); ``traps`` (one output per known tf2onnx trap:
lower (ASCII and encoding='utf-8'), upper, whitespace split, length in bytes and in characters,
hash buckets and a hashed embedding built on them); and ``bad_split`` (a two-character
separator, which the extensions' StringSplit reads as "either character": a conversion
that must fail, naming the output that differs).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelkit.cache import cached

KINDS = ("dense", "text", "traps", "bad_split")

TEXTS = [
    "the cat sat on the mat",
    "Dogs chase CATS, again and again!",
    "École: la maison bleue, naïve café",
    "ÄÖÜ straße",
    "日本語 テキスト",
    "emoji 😀 here",
    "hello world, hello ONNX",
    "a, b,c, d",
    "",
    "   spaced    out   ",
]

BUILD = r'''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import keras

out, texts = sys.argv[1], json.loads(sys.argv[2])
keras.utils.set_random_seed(0)
S = tf.TensorSpec([None], tf.string, name="text")


class Traps(tf.Module):
    """Every string op tf2onnx gets wrong, each in its own output."""

    def __init__(self):
        self.table = tf.Variable(np.random.default_rng(0).standard_normal((64, 4)).astype("float32"))

    @tf.function(input_signature=[S])
    def traps(self, text):
        words = tf.strings.split(text)
        buckets = tf.strings.to_hash_bucket_fast(words, 64)
        count = tf.cast(tf.maximum(words.row_lengths(), 1), tf.float32)[:, None]
        return {
            "lowered": tf.strings.lower(text),
            "lowered_utf8": tf.strings.lower(text, encoding="utf-8"),
            "uppered": tf.strings.upper(text),
            "words": words.to_tensor(default_value=""),
            "word_counts": tf.cast(words.row_lengths(), tf.int32),
            "bytes": tf.strings.length(text),
            "chars": tf.strings.length(text, unit="UTF8_CHAR"),
            "buckets": buckets.to_tensor(default_value=-1),
            "embedding": tf.reduce_sum(tf.gather(self.table, buckets), axis=1) / count,
        }


class BadSplit(tf.Module):
    @tf.function(input_signature=[S])
    def __call__(self, text):
        return {"counts": tf.cast(tf.strings.split(text, sep=", ").row_lengths(), tf.int32)}


def dense(path):
    class Dense(tf.Module):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.w1 = tf.Variable(rng.standard_normal((4, 16)).astype("float32"))
            self.b1 = tf.Variable(rng.standard_normal(16).astype("float32"))
            self.w2 = tf.Variable(rng.standard_normal((16, 3)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.matmul(tf.tanh(tf.matmul(x, self.w1) + self.b1), self.w2)}

    module = Dense()
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    x = np.random.default_rng(2).standard_normal((5, 4)).astype("float32")
    return module, {"x": x.tolist()}, {"x": tf.constant(x)}


def text(path):
    corpus = ["the cat sat on the mat", "Dogs chase cats!", "École: la maison bleue",
              "hello world, hello ONNX", "a quick brown fox"]
    vec = keras.layers.TextVectorization(max_tokens=48, output_mode="int", output_sequence_length=16)
    vec.adapt(tf.constant(corpus))
    inp = keras.Input(shape=(), dtype="string", name="text")
    emb = keras.layers.Embedding(48, 8)(vec(inp))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling1D()(emb))
    model.export(path, format="tf_saved_model", verbose=False)
    return None, None, None


def plain(value):
    value = np.asarray(value)
    if value.dtype.kind in "OS":
        if not value.size:
            return value.tolist()
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value).tolist()
    return value.tolist()


# TensorFlow's string hash on strings of every length class FarmHash distinguishes.
rng = np.random.default_rng(3)
alphabet = list("abcdefghijklmnopqrstuvwxyz ABC,.!") + ["é", "ß", "日", "😀"]
strings = ["".join(rng.choice(alphabet, size=n)) for n in [*range(0, 140), 255, 256, 1000, 4097]]
with open(os.path.join(out, "fingerprints.json"), "w", encoding="utf-8") as handle:
    buckets = tf.strings.to_hash_bucket_fast(strings, 2**63 - 1).numpy().tolist()
    json.dump({"num_buckets": 2**63 - 1, "strings": strings, "buckets": buckets}, handle, ensure_ascii=False)

for kind in ["dense", "text", "traps", "bad_split"]:
    folder = os.path.join(out, kind)
    path = os.path.join(folder, "saved_model")
    os.makedirs(folder)
    feed_json = {"text": texts}
    if kind == "dense":
        _, feed_json, _ = dense(path)
    elif kind == "text":
        text(path)
    elif kind == "traps":
        module = Traps()
        tf.saved_model.save(module, path, signatures={"serving_default": module.traps})
    else:
        module = BadSplit()
        tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    fn = tf.saved_model.load(path).signatures["serving_default"]
    feed = {k: tf.constant(np.array(v, dtype=object if k == "text" else "float32")) for k, v in feed_json.items()}
    result = {k: plain(v.numpy()) for k, v in fn(**feed).items()}
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as handle:
        json.dump({"inputs": feed_json, "outputs": result}, handle, ensure_ascii=False)
'''


def _build(folder: Path) -> None:
    from onnxg.convert import toolchain

    python = toolchain.ensure("tf").python
    done = subprocess.run([str(python), "-c", BUILD, str(folder), json.dumps(TEXTS)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the TF test models failed:\n{done.stderr[-3000:]}")


def build_all() -> Path:
    """The folder holding every tiny SavedModel (built once per machine)."""
    return cached("tf-savedmodels", {"kinds": KINDS, "texts": TEXTS}, _build)


def fingerprints() -> dict:
    """TensorFlow's ``to_hash_bucket_fast`` of 144 strings of 0 to 4097 UTF-8 characters."""
    return json.loads((build_all() / "fingerprints.json").read_text(encoding="utf-8"))


def saved_model(kind: str) -> Path:
    return build_all() / kind / "saved_model"


def expected(kind: str) -> dict:
    return json.loads((build_all() / kind / "expected.json").read_text(encoding="utf-8"))


def _converter_sources() -> dict[str, str]:
    """Hashes of the converter's code, so a cached conversion is redone when it changes."""
    import hashlib

    import onnxg

    root = Path(onnxg.__file__).parent
    workers = sorted((root / "convert" / "workers").glob("tf_*.py"))
    files = [root / "convert" / "tf.py", root / "runtime" / "farmhash.py", *workers]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files}


def converted(kind: str) -> tuple[Path, dict]:
    """``onnxg.convert.tf.convert`` of one test SavedModel: (model folder, provenance).

    Cached like the SavedModels, keyed by the converter's own sources as well.
    """
    def build(folder: Path) -> None:
        from onnxg.convert import tf as tfconv

        model = folder / f"{kind}-e2e"
        model.mkdir()
        provenance = tfconv.convert(saved_model(kind), model, precision="fp32", ep="cpu", extra={},
                                    trust_remote_code=False, log=folder / "convert.log", progress=lambda s: None)
        (folder / "provenance.json").write_text(json.dumps(provenance, indent=2, ensure_ascii=False))

    spec = {"kind": kind, "texts": TEXTS, "converter": _converter_sources(), "models": build_all().name}
    folder = cached(f"tf-converted-{kind}", spec, build)
    return folder / f"{kind}-e2e", json.loads((folder / "provenance.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tf_models() -> Path:
    """Folder with one ``<kind>/saved_model`` + ``<kind>/expected.json`` per kind in KINDS."""
    return build_all()


@pytest.fixture(scope="session")
def tf_dense_savedmodel() -> Path:
    return saved_model("dense")


@pytest.fixture(scope="session")
def tf_text_savedmodel() -> Path:
    return saved_model("text")
