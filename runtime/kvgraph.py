"""The builder's decoder graph run with onnxruntime directly, over key-value buffers we own.

onnxruntime-genai's CPU graphs (its model builder's output) use ``GroupQueryAttention`` with
the past and present key-value tensors sharing one buffer (``past_present_share_buffer``) and
per-row lengths taken from ``attention_mask``: each row's new entries are written at that
row's own length, and its attention reads only its own first ``length`` positions. So rows of
different lengths can share one forward pass, a row can join or leave between two passes, and
a prefix computed once can be copied into another row (``batcher.py`` does all three).

``unsupported`` says which graphs this path cannot drive (they stay on onnxruntime-genai's
``Generator``, ``genai_engine.py``): anything but the plain decoder interface (``position_ids``,
``inputs_embeds``, vision or speech parts, a pipeline of sessions), a key-value cache that is
not shared between past and present, or one that slides (``slide_key_value_cache``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnxg.runtime import layout, onnxproto

PLAIN_INPUTS = {"input_ids", "attention_mask", "past_key_names", "past_value_names"}
PLAIN_OUTPUTS = {"logits", "present_key_names", "present_value_names"}
_DTYPES = {"float": np.float32, "float16": np.float16}
# ops that may sit between the vocabulary product and the logits, each acting on every position
# alone (a cast, a soft cap), and the products ``last_position_graph`` knows how to cut
_PER_POSITION = {"Cast", "Mul", "Div", "Tanh", "Add", "Sub"}
_PRODUCTS = {"MatMul", "MatMulNBits"}


def unsupported(folder: Path, config: dict[str, Any]) -> str | None:
    """Why this folder's graph must run on onnxruntime-genai's Generator; None if it need not."""
    model = config.get("model", {})
    decoder = model.get("decoder", {})
    extra = sorted(k for k in model if k in ("vision", "speech", "embedding", "encoder"))
    if extra:
        return f"a multimodal or encoder-decoder model ({', '.join(extra)})"
    if "pipeline" in decoder:
        return "a pipeline of several ONNX sessions"
    if set(decoder.get("inputs", {})) != PLAIN_INPUTS:
        return f"decoder inputs {sorted(decoder.get('inputs', {}))} (only input_ids, attention_mask and the cache)"
    if set(decoder.get("outputs", {})) != PLAIN_OUTPUTS:
        return f"decoder outputs {sorted(decoder.get('outputs', {}))}"
    if not config.get("search", {}).get("past_present_share_buffer"):
        return "a key-value cache not shared between past and present"
    window = decoder.get("sliding_window") or {}
    if isinstance(window, dict) and window.get("slide_key_value_cache"):
        return "a sliding key-value cache"
    io = layout.read_graph(folder / decoder.get("filename", "model.onnx"))
    names = {v.name: v for v in io.inputs}
    past = names.get(decoder["inputs"]["past_key_names"] % 0)
    if past is None or len(past.shape) != 4 or past.elem_type not in _DTYPES:
        return "a key-value cache that is not [batch, heads, length, head_size] float"
    logits = next((v for v in io.outputs if v.name == decoder["outputs"]["logits"]), None)
    if logits is None or not logits.shape or not isinstance(logits.shape[-1], int):
        return "logits without a fixed vocabulary size"
    return None


class Buffers:
    """Key-value memory for ``rows`` rows of up to ``length`` tokens: per layer one array
    ``[2, rows, kv_heads, length, head_size]``, so the cache of rows ``a..b`` of one layer is one
    contiguous block that the graph reads and writes in place. Resizing goes layer by layer, so
    it never holds two copies of the whole cache."""

    def __init__(self, layers: int, heads: int, head_size: int, dtype: Any) -> None:
        self.layers, self.heads, self.head_size = layers, heads, head_size
        self.dtype = np.dtype(dtype)
        self.token_bytes = layers * 2 * heads * head_size * self.dtype.itemsize
        self.arrays: list[np.ndarray] = []
        self.rows = 0
        self.length = 0
        self.version = 0  # bumped when the arrays are replaced (bindings point into them)

    @property
    def array_count(self) -> int:
        return len(self.arrays)

    @property
    def nbytes(self) -> int:
        return self.rows * self.length * self.token_bytes

    def resize(self, rows: int, length: int, keep: list[int]) -> None:
        """New arrays of ``rows`` x ``length``, keeping the first ``keep[i]`` tokens of row i."""
        if not rows or not length:
            self.arrays, self.rows, self.length = [], 0, 0
            self.version += 1
            return
        old = self.arrays
        self.arrays = []
        for layer in range(self.layers):
            new = np.zeros((2, rows, self.heads, length, self.head_size), dtype=self.dtype)
            if old:
                prev = old[layer]
                for i, n in enumerate(keep[:rows]):
                    if n:
                        new[:, i, :, :n] = prev[:, i, :, :n]
                old[layer] = new  # the old layer is freed now
                del prev
            self.arrays.append(new)
        self.rows, self.length = rows, length
        self.version += 1

    def move(self, src: int, dst: int, tokens: int) -> None:
        if tokens:
            for a in self.arrays:
                a[:, dst, :, :tokens] = a[:, src, :, :tokens]

    def snapshot(self, row: int, tokens: int) -> np.ndarray:
        """A copy of one row's first ``tokens`` entries: [layers, 2, kv_heads, tokens, head_size]."""
        return np.stack([a[:, row, :, :tokens] for a in self.arrays])

    def load(self, row: int, kv: np.ndarray, tokens: int) -> None:
        for layer, a in enumerate(self.arrays):
            a[:, row, :, :tokens] = kv[layer, :, :, :tokens]

    def block(self, layer: int, kind: int, first: int, rows: int) -> np.ndarray:
        return self.arrays[layer][kind, first:first + rows]


def last_position_graph(path: Path, logits_name: str) -> bytes | None:
    """The decoder graph with its vocabulary product cut to each row's last position, or None
    when its tail is not a product followed by per-position ops (``onnxproto.last_position_only``).

    The batcher reads logits only at each row's last new token, and never those of a
    prefill pass (a prompt's last token always runs in a decode pass); the builder's graph
    computes them at every position: in 256-token prefill chunks of SmolLM2-135M int4 that
    product took 14.4% of the pass (ONNX Runtime profile; 2.45 s against 3.0 s for four
    chunks), and the logits 50 MB a chunk. Decode passes compute exactly what they did."""
    if path.stat().st_size >= 2**30:  # weights inside the file: leave such a graph as it is
        return None
    data = path.read_bytes()
    logits = next((v for v in onnxproto.parse_bytes(data).outputs if v.name == logits_name), None)
    if logits is None or len(logits.shape) != 3:
        return None
    return onnxproto.last_position_only(data, logits_name, _PER_POSITION, _PRODUCTS)


class DecoderGraph:
    """One onnxruntime session of the decoder; ``run`` feeds ``ids`` [rows, steps] to the rows
    ``first..first+rows`` of ``buffers`` whose caches hold ``lengths`` tokens, and returns the
    logits of each row's last new token."""

    def __init__(self, folder: Path, config: dict[str, Any], threads: int | None = None) -> None:
        import onnxruntime as ort

        decoder = config["model"]["decoder"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        # Idle inference threads sleep instead of spinning: the server's own Python work (the
        # event loop, sampling, detokenizing) then gets the cores between passes. Measured on
        # 2 shared cores: decode 15.6-22 ms/token without spinning, 47-85 ms with it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        names = decoder["inputs"]
        outs = decoder["outputs"]
        path = folder / decoder.get("filename", "model.onnx")
        cut = last_position_graph(path, outs["logits"])
        self.last_only = False  # True: logits [rows, 1, vocab] whatever the pass's length
        if cut is not None:  # the edited graph in memory, its weights still read from the folder
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
            try:
                self.session = ort.InferenceSession(cut, options, providers=["CPUExecutionProvider"])
                self.last_only = True
            except Exception:  # noqa: BLE001 - an ONNX Runtime without that option: run the graph as it is
                pass
        if not self.last_only:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.layers = int(decoder["num_hidden_layers"])
        self.past = [(names["past_key_names"] % i, names["past_value_names"] % i) for i in range(self.layers)]
        self.present = [(outs["present_key_names"] % i, outs["present_value_names"] % i) for i in range(self.layers)]
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.ids_name, self.mask_name, self.logits_name = names["input_ids"], names["attention_mask"], outs["logits"]
        self.ids_dtype = np.int32 if inputs[self.ids_name].type == "tensor(int32)" else np.int64
        self.mask_dtype = np.int32 if inputs[self.mask_name].type == "tensor(int32)" else np.int64
        past = inputs[self.past[0][0]]
        self.kv_dtype = np.float16 if past.type == "tensor(float16)" else np.float32
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_size = int(decoder["head_size"])
        logits = next(o for o in self.session.get_outputs() if o.name == self.logits_name)
        self.vocab = int(logits.shape[-1])
        self.logits_dtype = np.float16 if logits.type == "tensor(float16)" else np.float32
        self._bindings: dict[tuple[int, int, int], Any] = {}

    def buffers(self) -> Buffers:
        return Buffers(self.layers, self.kv_heads, self.head_size, self.kv_dtype)

    def _binding(self, buffers: Buffers, first: int, rows: int) -> Any:
        key = (buffers.version, first, rows)
        io = self._bindings.get(key)
        if io is not None:
            return io
        if len(self._bindings) > 64 or any(k[0] != buffers.version for k in self._bindings):
            self._bindings.clear()
        io = self.session.io_binding()
        for layer, (pk, pv) in enumerate(self.past):
            for j, (name_in, name_out) in enumerate(((pk, self.present[layer][0]), (pv, self.present[layer][1]))):
                block = buffers.block(layer, j, first, rows)
                shape, ptr = list(block.shape), block.ctypes.data
                io.bind_input(name_in, "cpu", 0, self.kv_dtype, shape, ptr)
                io.bind_output(name_out, "cpu", 0, self.kv_dtype, shape, ptr)
        self._bindings[key] = io
        return io

    def run(self, ids: np.ndarray, lengths: np.ndarray, buffers: Buffers, first: int) -> np.ndarray:
        rows, steps = ids.shape
        total = lengths + steps
        assert int(total.max()) <= buffers.length, "the caller grows the buffers first"
        width = int(total.max())
        mask = (np.arange(width)[None, :] < total[:, None]).astype(self.mask_dtype)
        ids = np.ascontiguousarray(ids, dtype=self.ids_dtype)
        io = self._binding(buffers, first, rows)
        io.bind_input(self.ids_name, "cpu", 0, self.ids_dtype, [rows, steps], ids.ctypes.data)
        io.bind_input(self.mask_name, "cpu", 0, self.mask_dtype, [rows, width], mask.ctypes.data)
        logits = np.empty((rows, 1 if self.last_only else steps, self.vocab), dtype=self.logits_dtype)
        io.bind_output(self.logits_name, "cpu", 0, self.logits_dtype, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(io)
        return np.asarray(logits[:, -1, :], dtype=np.float32)

