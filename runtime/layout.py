"""What a model folder is: the one inspector every part of onnxg asks.

``inspect(folder) -> Layout`` decides, from the files and the graph's declared inputs and
outputs (read with ``onnxproto``, which memory-maps the file and skips the weights), which
kind of model a folder holds, which ONNX file is its graph, which output the runtime reads,
where its tokenizer is, and what (if anything) keeps the runtime from loading it. The
store (``onnxg models``), the checker (``onnxg check``, hence ``convert`` and ``pull``) and
the loaders (``runtime/loading.py``) all read the folder through it, so they cannot
disagree on what a folder is.

The kinds:

- ``chat``: an onnxruntime-genai folder (``genai_config.json``; a decoder graph, one with
  ``past_key_values`` inputs, without it is recognised as chat and reported as incomplete).
- ``embedding``: an ONNX graph over token ids (``KNOWN_INPUTS``) with a tokenizer file.
- ``e2e``: an ONNX graph that takes strings (it tokenizes inside itself).
- ``tensor`` (not served): a converted TensorFlow graph with numeric, non-token inputs and
  ``model_io.json``; ``onnxg check`` passes it, the runtime refuses it with that reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from onnxg.runtime import onnxproto
from onnxg.runtime.errors import InvalidRequest, ModelLoadError

Kind = Literal["chat", "embedding", "e2e"]
"""``chat``: an onnxruntime-genai folder; ``embedding``: an ONNX graph over token ids;
``e2e``: an ONNX graph that takes strings (tokenizes inside itself)."""
FolderKind = Literal["chat", "embedding", "e2e", "tensor"]
KINDS: tuple[Kind, ...] = get_args(Kind)

# The words users and recipes have used for a kind (``onnxg convert --task``, recipes'
# ``task``, old ``onnxg.json`` files): all map to the one vocabulary above.
KIND_WORDS: dict[str, Kind] = {
    "chat": "chat",
    "embedding": "embedding", "embed": "embedding",
    "e2e": "e2e",
}

GENAI_CONFIG = "genai_config.json"
META_FILE = "model_io.json"  # written by the TensorFlow converter: text input, embedding output, ...
# The graph of a non-chat folder: the first of these present, else the only *.onnx of the
# folder, else the only *.onnx of its onnx/ subfolder (the layout of hub ONNX exports).
GRAPH_NAMES = ("model.onnx", "onnx/model.onnx", "model_quantized.onnx", "onnx/model_quantized.onnx")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
# What an embedding graph may take: the runtime feeds each of these (integers) and nothing else.
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# Outputs of per-token states (pooled by onnxg) and of pooled sentence vectors, by preference.
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings", "hidden_states", "encoder_last_hidden_state")
POOLED_OUTPUTS = ("sentence_embedding", "sentence_embeddings", "embeddings", "text_embeds")
INT_TYPES = ("int64", "int32")
FLOAT_TYPES = ("float", "float16", "double", "bfloat16")

ValueInfo = onnxproto.ValueInfo  # name, elem_type ("float", "int64", "string", ...), shape

NOT_A_MODEL_HINT = ("this is not a converted model: convert it with `onnxg convert SOURCE` "
                    "or pull one with `onnxg pull`")


def kind_named(word: str) -> Kind:
    """The kind a user's word means (``embed`` and ``embedding`` alike); InvalidRequest otherwise."""
    kind = KIND_WORDS.get(word.strip().lower())
    if kind is None:
        raise InvalidRequest(f"unknown model kind {word!r}", hint=f"use one of: {', '.join(KINDS)}", param="task")
    return kind


@dataclass(frozen=True)
class Issue:
    """One reason the runtime cannot load the folder; ``topic`` names the check it fails."""

    topic: str  # "model files", "model file", "genai_config.json", "inputs", "outputs", "tokenizer", "model_io.json"
    detail: str
    hint: str | None = None


@dataclass(frozen=True)
class Layout:
    folder: Path
    kind: FolderKind | None  # None: not a model at all (``problem`` says why)
    graph: Path | None = None  # the main ONNX file (chat: genai_config's decoder)
    inputs: tuple[ValueInfo, ...] = ()
    outputs: tuple[ValueInfo, ...] = ()
    tokenizer: Path | None = None  # the first of TOKENIZER_FILES present
    output: str | None = None  # the output the runtime reads (embedding, e2e, tensor)
    token_states: bool = False  # embedding: ``output`` holds per-token states onnxg pools
    text_input: str | None = None  # e2e: the string input texts are fed to
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # model_io.json
    issues: tuple[Issue, ...] = ()

    @property
    def served(self) -> bool:
        """Whether the runtime loads this folder (it may still fail in onnxruntime itself)."""
        return self.kind in KINDS and not self.issues

    @property
    def problem(self) -> str | None:
        return self.issues[0].detail if self.issues else None

    def issue(self, topic: str) -> Issue | None:
        return next((i for i in self.issues if i.topic == topic), None)

    def require(self) -> Kind:
        """The kind, or ModelLoadError saying why the runtime cannot load this folder."""
        if self.issues:
            first = self.issues[0]
            raise ModelLoadError(first.detail, hint=first.hint)
        if self.kind == "tensor":
            raise ModelLoadError(
                f"{self.folder.name} is a numeric graph ({describe_io(self.inputs)}), not a text model: "
                "onnxg serves chat and embedding models",
                hint=f"run it with onnxruntime directly; {META_FILE} names its inputs and outputs")
        assert self.kind is not None  # a folder with no kind always has an issue
        return self.kind


def _io(value: ValueInfo) -> str:
    shape = "?" if value.shape is None else ",".join("?" if d is None else str(d) for d in value.shape)
    return f"{value.name}:{value.elem_type}[{shape}]"


def describe_io(values: tuple[ValueInfo, ...] | list[ValueInfo]) -> str:
    """``name:type[dims]`` of each value, as ``onnxg check`` shows them."""
    return ", ".join(_io(v) for v in values)


# --- finding the files -----------------------------------------------------------------------


def onnx_files(folder: Path) -> list[Path]:
    """The ``*.onnx`` files directly in ``folder``, by name."""
    return sorted(p for p in folder.glob("*.onnx") if p.is_file())


def find_graph(folder: Path) -> tuple[Path | None, list[Path]]:
    """The main graph by the rule of ``GRAPH_NAMES``; when there is none, the candidates
    that made the choice ambiguous (empty when there is no ``.onnx`` file at all)."""
    for name in GRAPH_NAMES:
        if (folder / name).is_file():
            return folder / name, []
    for where in (folder, folder / "onnx"):
        found = onnx_files(where)
        if len(found) == 1:
            return found[0], []
        if found:
            return None, found
    return None, []


def graph_bytes(graph: Path) -> int:
    """The graph file and the external-data files its initializers name: what a session of it
    holds in memory."""
    files = {graph} | {graph.parent / ref.location for ref in read_graph(graph).external}
    return sum(f.stat().st_size for f in files if f.is_file())


def find_tokenizer(folder: Path) -> Path | None:
    return next((folder / n for n in TOKENIZER_FILES if (folder / n).is_file()), None)


def read_graph(path: Path) -> onnxproto.OnnxInfo:
    """The graph's declared inputs and outputs (no weights read); ModelLoadError if unreadable."""
    try:
        info = onnxproto.read(Path(path))
    except (OSError, onnxproto.ProtoError) as exc:
        raise ModelLoadError(f"{path.name} is not a readable ONNX model: {exc}",
                             hint="the file is damaged or incomplete: download or convert it again") from None
    if not info.inputs and not info.outputs:
        raise ModelLoadError(f"{path.name} holds no ONNX graph",
                             hint="the file is damaged or incomplete: download or convert it again")
    return info


def read_meta(folder: Path) -> dict[str, Any]:
    """``model_io.json`` as a dict (``{}`` when absent); ModelLoadError when it is not JSON."""
    path = folder / META_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{META_FILE} cannot be read: {exc}", hint="convert the model again") from None
    return data if isinstance(data, dict) else {}


def _genai_decoder(folder: Path) -> Path | None:
    try:
        config = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
        filename = config["model"]["decoder"]["filename"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder / filename if isinstance(filename, str) else None


# --- the inspector -------------------------------------------------------------------------


def inspect(folder: Path) -> Layout:
    """What ``folder`` holds (never raises for a broken folder: ``issues`` says what is wrong)."""
    folder = Path(folder)
    tokenizer = find_tokenizer(folder) if folder.is_dir() else None
    if not folder.is_dir():
        return Layout(folder, None, issues=(Issue("folder", f"{folder} is not a folder",
                                                   "pass the folder that holds the model"),))
    if (folder / GENAI_CONFIG).is_file():
        decoder = _genai_decoder(folder)
        if decoder is not None and not decoder.is_file():
            return Layout(folder, "chat", decoder, tokenizer=tokenizer, issues=(Issue(
                "model files", f"missing {_relative(decoder, folder)} (named in {GENAI_CONFIG})",
                "the folder is incomplete: copy the missing files, or convert it again with `onnxg convert SOURCE`"),))
        io = _try_read(decoder) if decoder is not None else None
        return Layout(folder, "chat", decoder, *(io or ((), ())), tokenizer=tokenizer)
    graph, candidates = find_graph(folder)
    if graph is None and not candidates:
        return Layout(folder, None, tokenizer=tokenizer, issues=(Issue(
            "model files", "no model.onnx here (no .onnx file and no genai_config.json)", NOT_A_MODEL_HINT),))
    try:
        info = read_graph(graph if graph is not None else candidates[0])
    except ModelLoadError as exc:
        return Layout(folder, None, graph, tokenizer=tokenizer, issues=(Issue("model file", exc.message, exc.hint),))
    inputs, outputs = tuple(info.inputs), tuple(info.outputs)
    kind = _graph_kind(folder, inputs)
    if graph is None:
        names = ", ".join(_relative(p, folder) for p in candidates)
        return Layout(folder, kind, None, inputs, outputs, tokenizer, issues=(Issue(
            "model file", f"several ONNX files and no model.onnx ({names})",
            "name the one to use model.onnx (one model per folder)"),))
    if kind == "chat":
        return Layout(folder, kind, graph, inputs, outputs, tokenizer, issues=(Issue(
            GENAI_CONFIG, f"missing (the folder holds {_relative(graph, folder)})",
            "onnxruntime-genai needs genai_config.json next to the model: the builder writes it, so "
            "convert it again with `onnxg convert SOURCE`, or copy it from where the model came from"),))
    if kind == "embedding":
        return _embedding(folder, graph, inputs, outputs, tokenizer)
    try:
        meta = read_meta(folder)
    except ModelLoadError as exc:
        return Layout(folder, kind, graph, inputs, outputs, tokenizer,
                      issues=(Issue(META_FILE, exc.message, exc.hint),))
    if kind == "e2e":
        return _e2e(folder, graph, inputs, outputs, tokenizer, meta)
    first = (meta.get("outputs") or [{}])[0]
    wanted = meta.get("embedding_output") or (first.get("name") if isinstance(first, dict) else None)
    issues = () if wanted in {o.name for o in outputs} else (Issue(
        "outputs", f"{META_FILE} names output {wanted!r}, which the graph lacks ({describe_io(outputs)})",
        f"{META_FILE} names output {wanted!r}, which the graph lacks: convert again"),)
    return Layout(folder, kind, graph, inputs, outputs, tokenizer, output=wanted, meta=meta, issues=issues)


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _try_read(path: Path) -> tuple[tuple[ValueInfo, ...], tuple[ValueInfo, ...]] | None:
    try:
        info = read_graph(path)
    except ModelLoadError:
        return None
    return tuple(info.inputs), tuple(info.outputs)


def _graph_kind(folder: Path, inputs: tuple[ValueInfo, ...]) -> FolderKind:
    names = {i.name for i in inputs}
    if any(n.startswith("past_key_values") for n in names):
        return "chat"
    if any(i.elem_type == "string" for i in inputs):
        return "e2e"
    if ((folder / META_FILE).is_file() and "input_ids" not in names
            and all(i.elem_type not in (None, "string") for i in inputs)):
        return "tensor"
    return "embedding"


def choose_output(outputs: tuple[ValueInfo, ...] | list[ValueInfo], *,
                  prefer_tokens: bool = False) -> tuple[str, bool] | None:
    """The embedding output to read and whether it holds token states (3-D) rather than
    pooled vectors (2-D): a pooled output unless ``prefer_tokens`` (a pooling was asked for)."""
    floats = {o.name: o for o in outputs if o.elem_type in FLOAT_TYPES or o.elem_type is None}
    token = [n for n in TOKEN_OUTPUTS if n in floats] or [n for n, o in floats.items() if o.shape and len(o.shape) == 3]
    pooled = [n for n in POOLED_OUTPUTS if n in floats and floats[n].shape and len(floats[n].shape) == 2]
    if pooled and not prefer_tokens:
        return pooled[0], False
    if token:
        return token[0], True
    if pooled:
        return pooled[0], False
    return None


def _embedding(folder: Path, graph: Path, inputs: tuple[ValueInfo, ...], outputs: tuple[ValueInfo, ...],
               tokenizer: Path | None) -> Layout:
    issues = []
    bad = [i for i in inputs if i.name not in KNOWN_INPUTS or i.elem_type not in INT_TYPES]
    if bad or "input_ids" not in {i.name for i in inputs}:
        issues.append(Issue(
            "inputs", f"{graph.name} takes inputs onnxg cannot feed: {describe_io(inputs)}",
            f"the runtime feeds {', '.join(KNOWN_INPUTS)} (integers): re-export with "
            "`onnxg convert --task embedding` (optimum feature-extraction)"))
    chosen = choose_output(outputs)
    if chosen is None:
        issues.append(Issue(
            "outputs", f"{graph.name} has no token-state or sentence-embedding output ({describe_io(outputs)})",
            f"the runtime reads a float output named {' or '.join(TOKEN_OUTPUTS[:2])} [batch, tokens, dim] or "
            f"{POOLED_OUTPUTS[0]} [batch, dim]: export the feature-extraction task"))
    if tokenizer is None:
        issues.append(Issue(
            "tokenizer", f"no tokenizer.json or tokenizer.model in {folder.name}",
            "copy tokenizer.json (Hugging Face models) or tokenizer.model (T5, ALBERT, ...) next to model.onnx"))
    output, token_states = chosen or (None, False)
    return Layout(folder, "embedding", graph, inputs, outputs, tokenizer, output=output,
                  token_states=token_states, issues=tuple(issues))


def _e2e(folder: Path, graph: Path, inputs: tuple[ValueInfo, ...], outputs: tuple[ValueInfo, ...],
         tokenizer: Path | None, meta: dict[str, Any]) -> Layout:
    issues = []
    strings = [i for i in inputs if i.elem_type == "string"]
    wanted = meta.get("text_input") or strings[0].name
    text = next((i for i in strings if i.name == wanted), None)
    if text is None:
        issues.append(Issue("inputs", f"{META_FILE} names the text input {wanted!r}, which the graph lacks",
                            "convert the model again"))
    elif len(inputs) > 1:
        others = ", ".join(i.name for i in inputs if i.name != text.name)
        issues.append(Issue("inputs", f"{graph.name} needs inputs besides the text: {others}",
                            "an end-to-end model takes one string tensor of texts"))
    elif text.shape is not None and len(text.shape) not in (1, 2):
        issues.append(Issue("inputs", f"the text input {text.name} has rank {len(text.shape)}",
                            "expected [batch] or [batch, 1]"))
    names = {o.name for o in outputs}
    output = meta.get("embedding_output")
    if output and output not in names:
        issues.append(Issue("outputs", f"{META_FILE} names the output {output!r}, which the graph lacks",
                            "convert the model again"))
    elif not output:
        output = next((o.name for o in outputs if o.elem_type in FLOAT_TYPES and (o.shape is None or len(o.shape) == 2)),
                      None)
        if output is None:
            issues.append(Issue("outputs", f"{graph.name} has no [batch, dim] float output ({describe_io(outputs)})",
                                f"the model does not return vectors: name the embedding output in {META_FILE}"))
    return Layout(folder, "e2e", graph, inputs, outputs, tokenizer, output=output,
                  text_input=text.name if text is not None else None, meta=meta, issues=tuple(issues))
