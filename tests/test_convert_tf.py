"""TensorFlow SavedModel -> ONNX (convert/tf.py): outputs match TensorFlow's, every trap fixed.

The SavedModels and TensorFlow's expected outputs come from tests/modelkit/tf.py (built
under the "tf" toolchain). Here the converted graphs run in onnxg's own environment, with
no TensorFlow loaded, as the runtime will run them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelkit import tf as tfkit
from onnxg.convert import tf as tfconv
from onnxg.runtime.errors import ConversionError

pytestmark = [pytest.mark.slow, pytest.mark.model]  # TensorFlow SavedModels and their conversions


def _convert(kind: str, out: Path, **extra: str) -> tuple[dict[str, Any], list[str]]:
    steps: list[str] = []
    out.mkdir(parents=True)
    provenance = tfconv.convert(tfkit.saved_model(kind), out, precision="fp32", ep="cpu", extra=dict(extra),
                                trust_remote_code=False, log=out.parent / f"{kind}.log", progress=steps.append)
    return provenance, steps


@pytest.fixture(scope="module")
def tf_converted() -> dict[str, tuple[Path, dict[str, Any]]]:
    """dense and traps through ``onnxg.convert.tf.convert`` (cached until the converter changes)."""
    return {kind: tfkit.converted(kind) for kind in ("dense", "traps")}


def _run_onnx(folder: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    from onnxg.runtime.e2e import open_session

    session = open_session(folder / "model.onnx")
    feed = {}
    for i in session.get_inputs():
        dtype = object if i.type == "tensor(string)" else np.float32
        feed[i.name] = np.array(inputs[i.name], dtype=dtype)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def test_dense_savedmodel_matches_tensorflow(tf_converted: dict) -> None:
    folder, provenance = tf_converted["dense"]
    expected = tfkit.expected("dense")
    got = _run_onnx(folder, expected["inputs"])
    want = np.array(expected["outputs"]["y"], dtype=np.float32)
    assert got["y"].shape == want.shape == (5, 3)
    np.testing.assert_allclose(got["y"], want, atol=1e-5, rtol=1e-5)
    assert provenance["converter"] == "tf2onnx"
    assert provenance["opset"] >= 13
    assert provenance["command"][:3] == ["python", "-m", "tf2onnx.convert"]
    assert provenance["toolchain"]["tensorflow-cpu"] and provenance["toolchain"]["tf2onnx"]
    assert provenance["fixes"] == []
    assert all(item["ok"] for item in provenance["verification"])
    meta = json.loads((folder / "model_io.json").read_text())
    assert meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["dtype"] == "float32"
    assert meta["text_input"] is None and meta["embedding_output"] == "y" and meta["dimensions"] == 3


def test_string_graph_without_fixes_would_not_even_load(tf_converted: dict, tmp_path: Path) -> None:
    """The premise of the fixes: tf2onnx's raw output needs a locale this machine lacks."""
    import onnx

    from onnxg.runtime.e2e import open_session
    from onnxg.runtime.errors import ModelLoadError

    folder, _ = tf_converted["traps"]
    model = onnx.load(str(folder / "model.onnx"))
    for node in model.graph.node:
        if node.op_type == "StringNormalizer":
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("case_change_action", "LOWER"))
    broken = tmp_path / "model.onnx"
    onnx.save(model, str(broken))
    locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    if "en_us.utf8" in locales or "en_us.utf-8" in locales:
        pytest.skip("this machine has en_US.UTF-8, so the unfixed graph loads")
    with pytest.raises(ModelLoadError):
        open_session(broken)


@pytest.mark.parametrize(
    ("outputs", "fix"),
    [
        (("lowered", "uppered"), "StringNormalizer locale en_US.UTF-8 -> C"),
        (("lowered_utf8",), "StringNormalizer -> StringLower (Unicode"),
        (("words", "word_counts"), "StringSplit separator '' (characters) -> whitespace"),
        (("bytes",), "counting UTF-8 bytes"),
        (("chars",), "ai.onnx.contrib StringLength, cast to int32"),
        (("buckets", "embedding"), "TFStringToHashBucketFast"),
    ],
    ids=["lower-upper", "lower-utf8", "split", "length-bytes", "length-chars", "hash"],
)
def test_each_trap_is_fixed_and_matches_tensorflow(tf_converted: dict, outputs: tuple[str, ...], fix: str) -> None:
    folder, provenance = tf_converted["traps"]
    assert any(fix in line for line in provenance["fixes"]), provenance["fixes"]
    expected = tfkit.expected("traps")
    got = _run_onnx(folder, expected["inputs"])
    for name in outputs:
        want = expected["outputs"][name]
        value = got[name]
        if value.dtype == object:
            assert value.tolist() == want, name
        elif value.dtype.kind == "f":
            np.testing.assert_allclose(value, np.array(want, dtype=np.float32), atol=1e-5, err_msg=name)
        else:
            assert value.tolist() == want, name
            assert value.dtype == (np.int32 if name in ("bytes", "chars", "word_counts") else np.int64), name


def test_metadata_names_the_text_input_and_python_op(tf_converted: dict) -> None:
    folder, provenance = tf_converted["traps"]
    meta = json.loads((folder / "model_io.json").read_text())
    assert meta["text_input"] == "text"
    assert meta["embedding_output"] == "embedding" and meta["dimensions"] == 4
    assert meta["python_ops"] == ["TFStringToHashBucketFast"] == provenance["python_ops"]
    assert meta["verified"]["samples"] >= 10


def test_outputs_that_differ_fail_the_conversion_and_say_by_how_much(tmp_path: Path) -> None:
    with pytest.raises(ConversionError) as info:
        _convert("bad_split", tmp_path / "bad")
    message = info.value.message
    assert "differ from TensorFlow" in message
    assert "counts:" in message and "max abs diff" in message and "values differ" in message
    assert "log" in (info.value.hint or "")


def test_samples_file_is_used_for_the_comparison(tmp_path: Path) -> None:
    """On samples without commas or spaces the bad separator agrees with TensorFlow: the samples matter."""
    samples = tmp_path / "samples.txt"
    samples.write_text("plainword\nanother\n\nthird-line\n", encoding="utf-8")
    provenance, steps = _convert("bad_split", tmp_path / "ok", samples=str(samples))
    assert provenance["verification"][0]["ok"]
    assert any("compare with TensorFlow" in s for s in steps)


def test_bad_options_are_refused_before_any_work(tmp_path: Path) -> None:
    source = tfkit.saved_model("dense")
    def run(**kw: Any) -> None:
        args = {"precision": "fp32", "ep": "cpu", "extra": {}, **kw}
        tfconv.convert(source, tmp_path, trust_remote_code=False, log=tmp_path / "log", progress=lambda s: None, **args)
    with pytest.raises(ConversionError, match="fp32 only"):
        run(precision="int4")
    with pytest.raises(ConversionError, match="opset 11 is too old"):
        run(extra={"opset": "11"})
    with pytest.raises(ConversionError, match="unknown option"):
        run(extra={"block_size": "32"})
    with pytest.raises(ConversionError, match="not a TensorFlow SavedModel"):
        tfconv.convert(tmp_path, tmp_path, precision="fp32", ep="cpu", extra={}, trust_remote_code=False,
                       log=tmp_path / "log", progress=lambda s: None)
    with pytest.raises(ConversionError, match="no signature 'nope'"):
        out = tmp_path / "sig"
        out.mkdir()
        tfconv.convert(source, out, precision="fp32", ep="cpu", extra={"signature": "nope"},
                       trust_remote_code=False, log=tmp_path / "log", progress=lambda s: None)


def test_onnxg_convert_command_on_a_savedmodel(tf_text_savedmodel: Path, tmp_path: Path) -> None:
    out = tmp_path / "text-e2e"
    done = subprocess.run(
        [sys.executable, "-c", "from onnxg.cli.main import main; main()", "convert", str(tf_text_savedmodel),
         "-o", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.onnx").is_file() and (out / "model_io.json").is_file()
    record = json.loads((out / "onnxg.json").read_text())
    assert record["converter"] == "tf2onnx" and record["precision"] == "fp32" and record["kind"] == "e2e"
    assert {f["path"] for f in record["files"]} >= {"model.onnx", "model_io.json"}
    expected = tfkit.expected("text")
    got = _run_onnx(out, expected["inputs"])
    np.testing.assert_allclose(got["output_0"], np.array(expected["outputs"]["output_0"]), atol=1e-5)
