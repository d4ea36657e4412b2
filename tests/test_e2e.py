"""End-to-end (string-input) embedding models through ``E2EModel`` and ``OnnxEmbeddingModel.load``.

The models are the tiny Keras ``TextVectorization`` SavedModel and the traps model (hashed
embedding: needs onnxg's TensorFlow-hash Python op) of tests/modelkit/tf.py, converted by
``onnxg.convert.tf``; TensorFlow's own vectors are the reference.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from modelkit import tf as tfkit
from onnxg.runtime import farmhash
from onnxg.runtime import layout, loading
from onnxg.runtime.e2e import E2EModel
from onnxg.runtime.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError

pytestmark = [pytest.mark.slow, pytest.mark.model]  # TensorFlow SavedModels and their conversions


@pytest.fixture(scope="module")
def e2e_folders() -> dict[str, Path]:
    """The text and traps models converted by ``onnxg.convert.tf`` (cached until it changes)."""
    return {kind: tfkit.converted(kind)[0] for kind in ("text", "traps")}


def _tf_vectors(kind: str, output: str) -> np.ndarray:
    return np.array(tfkit.expected(kind)["outputs"][output], dtype=np.float32)


def test_embeds_like_tensorflow(e2e_folders: dict[str, Path]) -> None:
    model = E2EModel.load(e2e_folders["text"])
    assert model.dimensions == 8
    assert model.name == "text-e2e" and model.path == e2e_folders["text"]
    result = model.embed(list(tfkit.TEXTS))
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (len(tfkit.TEXTS), 8)
    np.testing.assert_allclose(result.vectors, _tf_vectors("text", "output_0"), atol=1e-5)
    assert result.token_counts == [len(t.split()) for t in tfkit.TEXTS]
    assert result.total_tokens == sum(result.token_counts)


def test_small_batches_keep_input_order(e2e_folders: dict[str, Path]) -> None:
    model = E2EModel.load(e2e_folders["text"])
    texts = list(reversed(tfkit.TEXTS))
    whole = model.embed(texts, batch_size=64).vectors
    pieces = model.embed(texts, batch_size=3).vectors
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    np.testing.assert_allclose(whole, _tf_vectors("text", "output_0")[::-1], atol=1e-5)


def test_tensorflow_hash_runs_through_the_python_op(e2e_folders: dict[str, Path]) -> None:
    """The traps model's embedding looks rows up by TensorFlow's hash buckets."""
    model = E2EModel.load(e2e_folders["traps"])
    assert model.dimensions == 4
    vectors = model.embed(list(tfkit.TEXTS)).vectors
    np.testing.assert_allclose(vectors, _tf_vectors("traps", "embedding"), atol=1e-5)
    buckets = tfkit.expected("traps")["outputs"]["buckets"]
    for text, row in zip(tfkit.TEXTS, buckets, strict=True):
        assert [farmhash.hash_bucket_fast(w, 64) for w in text.split()] == row[: len(text.split())]


def test_fingerprint64_matches_tensorflow_at_every_length() -> None:
    data = tfkit.fingerprints()
    got = [farmhash.hash_bucket_fast(s, data["num_buckets"]) for s in data["strings"]]
    assert got == data["buckets"]


def test_normalize_and_truncation(e2e_folders: dict[str, Path]) -> None:
    folder = e2e_folders["text"]
    unit = E2EModel.load(folder, normalize=True).embed(["the cat sat", "hello world"]).vectors
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)

    short = E2EModel.load(folder, max_length=2)
    assert short.max_length == 2
    result = short.embed(["the cat sat on the mat", "hello"])
    assert result.token_counts == [2, 1]
    full = E2EModel.load(folder)
    np.testing.assert_allclose(result.vectors[0], full.embed(["the cat"]).vectors[0], atol=1e-6)

    strict = E2EModel.load(folder, max_length=2, truncate=False)
    with pytest.raises(ContextLengthExceeded):
        strict.embed(["one two three"])
    assert strict.embed(["one two"]).token_counts == [2]


def test_refusals(e2e_folders: dict[str, Path], tmp_path: Path) -> None:
    model = E2EModel.load(e2e_folders["text"])
    with pytest.raises(InvalidRequest) as info:
        model.embed_tokens([[1, 2, 3]])
    assert info.value.param == "input"
    with pytest.raises(InvalidRequest):
        model.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidRequest) as info:
        E2EModel.load(e2e_folders["text"], pooling="cls")
    assert info.value.param == "pooling"
    with pytest.raises(ModelLoadError):
        E2EModel.load(tmp_path)  # no model.onnx
    assert model.embed([]).vectors.shape == (0, 8)


def test_without_metadata_the_graph_itself_is_enough(e2e_folders: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(e2e_folders["text"] / "model.onnx", folder / "model.onnx")
    model = E2EModel.load(folder)
    assert model.dimensions == 8
    np.testing.assert_allclose(model.embed(list(tfkit.TEXTS)).vectors, _tf_vectors("text", "output_0"), atol=1e-5)


def test_concurrent_embeds_agree(e2e_folders: dict[str, Path]) -> None:
    model = E2EModel.load(e2e_folders["traps"], threads=1)
    model.warmup()
    want = model.embed(list(tfkit.TEXTS)).vectors
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(model.embed(list(tfkit.TEXTS), batch_size=4).vectors)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for got in results:
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_string_inputs_make_an_e2e_layout(e2e_folders: dict[str, Path]) -> None:
    assert layout.inspect(e2e_folders["text"]).kind == "e2e"
    dense, _ = tfkit.converted("dense")
    assert layout.inspect(dense).kind == "tensor"  # numeric inputs and model_io.json
    with pytest.raises(ModelLoadError, match="numeric graph"):
        E2EModel.load(dense)


def test_the_loader_hands_string_graphs_to_e2e(e2e_folders: dict[str, Path]) -> None:
    model = loading.load_embedding(e2e_folders["text"], normalize=False)
    assert isinstance(model, E2EModel)
    np.testing.assert_allclose(model.embed(list(tfkit.TEXTS)).vectors, _tf_vectors("text", "output_0"), atol=1e-5)


def test_loading_imports_nothing_heavy(e2e_folders: dict[str, Path]) -> None:
    """onnxruntime-extensions' package __init__ pulls in onnx, torch and transformers: not here."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\nfrom onnxg.runtime.e2e import E2EModel\n"
        f"m = E2EModel.load({str(e2e_folders['traps'])!r})\nm.embed(['a b c'])\n"
        "print(json.dumps([k for k in ('onnx', 'torch', 'transformers', 'tensorflow', 'onnxruntime_extensions')"
        " if k in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
