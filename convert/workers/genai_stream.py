"""Layer-by-layer model building for onnxruntime-genai's builder: memory bounded by a layer.

The builder's plain path loads the whole PyTorch model in float32 (``from_pretrained``),
keeps every weight alive in its ONNX graph, then quantizes the whole graph at once
(``ir.to_proto`` + ``MatMulNBitsQuantizer``): about 7 bytes per parameter at the peak.
Here the same builder runs with three hooks on its ``Model`` instance:

* ``load_weights`` returns the model skeleton on the ``meta`` device; its ``modules()``
  materialises each unit the builder visits (a decoder layer, the embedding, the final
  norm, the LM head) from the safetensors files just before the builder reads it (read
  with ``pread``, cast to the dtype ``from_pretrained`` would give) and frees it after;
* after each unit, the MatMuls (and Gathers) it made are quantized one node at a time by
  the same ``MatMulNBitsQuantizer`` the builder uses, and every new initializer is
  written to a scratch file and replaced by an ``ExternalTensor`` pointing there;
* ``to_nbits`` returns the graph already quantized, with the initializers in the order
  the plain path gives them, so ``save_model`` writes the same files.

Anything this cannot reproduce exactly (other quantization algorithms, GGUF or
pre-quantized inputs, adapters, checkpoints whose names need transformers' renaming)
keeps the builder's plain path; ``plan`` says which and why.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

CHUNK_COLUMNS = 8192  # columns of a wide MatMul weight quantized at a time
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class Checkpoint:
    """The safetensors files of a folder, read tensor by tensor with ``pread`` (no mmap, so
    pages read do not stay in this process's resident set)."""

    def __init__(self, folder: Path) -> None:
        self.entries: dict[str, tuple[Path, str, list[int], int, int]] = {}
        for path in sorted(folder.glob("*.safetensors")):
            with open(path, "rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(size))
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                start, end = info["data_offsets"]
                self.entries[key] = (path, info["dtype"], info["shape"], 8 + size + start, end - start)

    def shape(self, key: str) -> list[int] | None:
        entry = self.entries.get(key)
        return entry[2] if entry else None

    def tensor(self, key: str) -> Any:
        import torch

        path, dtype, shape, offset, length = self.entries[key]
        torch_dtype = getattr(torch, _DTYPES[dtype])
        if not length:
            return torch.empty(shape, dtype=torch_dtype)
        buffer = bytearray(length)
        with open(path, "rb", buffering=0) as handle:
            handle.seek(offset)
            view, done = memoryview(buffer), 0
            while done < length:
                read = handle.readinto(view[done:])
                if not read:
                    raise OSError(f"{path} ends inside tensor {key}")
                done += read
        return torch.frombuffer(buffer, dtype=torch_dtype).reshape(shape)


def plan(builder: Any, base: Any, input_path: str) -> str | None:
    """None when this builder instance can be streamed, else the reason it cannot."""
    cls = type(builder)
    if cls.load_weights is not base.Model.load_weights or cls.make_model is not base.Model.make_model:
        return f"{cls.__name__} loads its weights its own way"
    if input_path.endswith(".gguf") or getattr(builder, "quant_type", None) is not None:
        return "the input is GGUF or a pre-quantized checkpoint"
    extra = getattr(builder, "extra_options", {})
    if "adapter_path" in extra or "num_hidden_layers" in extra:
        return "adapter_path / num_hidden_layers options"
    if not any(Path(input_path).glob("*.safetensors")):
        return "no safetensors weights"
    if builder.onnx_dtype.name in ("INT4", "UINT4", "INT8", "UINT8"):
        return _quantization_plan(builder)
    return None


def _quantization_plan(builder: Any) -> str | None:
    quant = builder.quant_attrs
    if quant.get("use_qdq") or getattr(builder, "quantization_algo", "default") != "default":
        return "only the default MatMulNBits quantization is streamed"
    if getattr(builder, "int4_customized_weight_config", None) or getattr(builder, "exact_quant_overrides", None):
        return "per-node quantization overrides"
    if builder.ep == "cuda" and builder.matmul_attrs.get("weights_prepacked", 0) > 0:
        return "prepacked CUDA weights"
    return None


class Streamer:
    """The hooks (see the module docstring) for one builder instance."""

    def __init__(self, builder: Any, folder: Path, scratch: Path) -> None:
        self.builder = builder
        self.checkpoint = Checkpoint(folder)
        self.folder = folder
        self.scratch = scratch
        self.scratch_file = open(scratch, "wb")  # noqa: SIM115 - closed in finish()
        self.seen_nodes: set[Any] = set()  # the nodes themselves: ids of freed nodes get reused
        self.produced: list[str] = []  # initializers made by quantization, in node order
        self.quantize = builder.onnx_dtype.name in ("INT4", "UINT4", "INT8", "UINT8")
        self.opsets: dict[str, int] = {}
        self.peak_unit = 0

    # -- the skeleton and its units ----------------------------------------------------

    def skeleton(self) -> Any:
        """The model on the meta device (buffers real, as ``from_pretrained`` makes them)."""
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        b = self.builder
        config = AutoConfig.from_pretrained(str(self.folder), trust_remote_code=b.hf_remote)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=b.hf_remote,
                                                     dtype=torch.get_default_dtype())
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        model.eval()
        self.keys = self._checkpoint_keys(model)
        model.modules = lambda: self.walk(model)  # the builder's make_model iterates this
        return model

    def _checkpoint_keys(self, model: Any) -> dict[str, str]:
        """Parameter name -> checkpoint key (a tied parameter stored once reads that copy)."""
        aliases: dict[int, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            aliases.setdefault(id(param), []).append(name)
        keys: dict[str, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            # its own name first: transformers unties weights stored twice with different values
            stored = [n for n in (name, *aliases[id(param)]) if self.checkpoint.shape(n) is not None]
            if not stored:
                raise Unsupported(f"the checkpoint has no tensor {name}")
            if list(self.checkpoint.shape(stored[0])) != list(param.shape):
                raise Unsupported(f"{stored[0]} has shape {self.checkpoint.shape(stored[0])}, "
                                  f"the model expects {list(param.shape)}")
            keys[name] = stored[0]
        return keys

    def walk(self, model: Any) -> Any:
        import torch

        names = {id(module): name for name, module in model.named_modules(remove_duplicate=False)}
        inside_layer: set[int] = set()
        for module in torch.nn.Module.modules(model):
            # Modules the builder made while reading a unit (e.g. a fused projection split in
            # two) are not in ``names``: they hold real tensors already.
            unit = id(module) in names and id(module) not in inside_layer and (
                self.builder.is_layer(module) or any(True for _ in module.parameters(recurse=False)))
            if self.builder.is_layer(module):
                inside_layer.update(id(m) for m in module.modules())
            if not unit:
                yield module
                continue
            saved = self._materialise(module, names[id(module)])
            yield module
            for owner, attr, param in saved:  # before flushing: then only the graph holds them
                owner._parameters[attr] = param
            del saved
            self.flush()
        self.flush()

    def _materialise(self, module: Any, prefix: str) -> list[tuple[Any, str, Any]]:
        import torch

        saved, size = [], 0
        for sub_name, sub in module.named_modules(remove_duplicate=False):
            for attr, param in list(sub._parameters.items()):
                if param is None:
                    continue
                full = ".".join(part for part in (prefix, sub_name, attr) if part)
                tensor = self.checkpoint.tensor(self.keys[full])
                if tensor.is_floating_point():
                    tensor = tensor.to(torch.get_default_dtype())
                size += tensor.numel() * tensor.element_size()
                saved.append((sub, attr, param))
                sub._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
        self.peak_unit = max(self.peak_unit, size)
        return saved

    # -- quantize and spill what a unit made -------------------------------------------

    def flush(self) -> None:
        graph = self.builder.model.graph
        if self.quantize:
            for node in list(graph):
                if node not in self.seen_nodes:
                    self.seen_nodes.add(node)
                    self._quantize(graph, node)
        for value in list(graph.initializers.values()):
            if value.const_value is not None and not isinstance(value.const_value, _ir().ExternalTensor):
                self._spill(value)

    def _quantize(self, graph: Any, node: Any) -> None:
        ir = _ir()
        quant = self.builder.quant_attrs
        if node.op_type not in quant["op_types_to_quantize"] or node.name in quant["nodes_to_exclude"]:
            return
        index = 0 if node.op_type == "Gather" else 1
        if len(node.inputs) <= index or node.inputs[index] is None or node.inputs[index].const_value is None:
            return
        weight = node.inputs[index]
        result = self._quantize_node(node, weight)
        if result is None:
            return
        new_protos, arrays = result
        for name, array in arrays.items():
            value = self.builder.make_value(name)
            tensor = ir.Tensor(array, name=name)
            value.dtype, value.shape, value.const_value = tensor.dtype, tensor.shape, tensor
            graph.register_initializer(value)
            self.produced.append(name)
        new_nodes = [self._node(proto, node) for proto in new_protos]
        self.seen_nodes.update(new_nodes)
        old_outputs = list(node.outputs)
        new_outputs = [v for n in new_nodes for v in n.outputs if v.name in {o.name for o in old_outputs}]
        ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, old_outputs, new_outputs)
        for value in new_outputs:  # later units find the node's outputs by name
            self.builder.values[value.name] = value
        for proto in new_protos:
            if proto.domain:
                self.opsets[proto.domain] = 1
        if not weight.uses() and not weight.is_graph_output():
            graph.initializers.pop(weight.name)
            weight.const_value = None

    def _quantize_node(self, node: Any, weight: Any) -> tuple[list[Any], dict[str, Any]] | None:
        """The node quantized by the builder's own quantizer, in one-node models.

        A MatMul weight [K, N] is quantized per column (blocks run along K), so a wide one
        (the LM head) goes through in slices of columns whose results are stacked: the same
        bytes, without several float32 copies of the whole matrix alive at once.
        """
        import numpy as np

        ir = _ir()
        array = weight.const_value.numpy()
        serialized = ir.serde.serialize_node(node)
        if node.op_type != "MatMul" or array.ndim != 2 or array.shape[1] <= CHUNK_COLUMNS:
            return self._quantize_alone(serialized, weight.name, array)
        protos, parts = None, {}
        for start in range(0, array.shape[1], CHUNK_COLUMNS):
            piece = np.ascontiguousarray(array[:, start:start + CHUNK_COLUMNS])
            result = self._quantize_alone(serialized, weight.name, piece)
            if result is None or len(result[0]) != 1 or result[0][0].op_type != "MatMulNBits":
                return self._quantize_alone(serialized, weight.name, array)
            protos = protos or result[0]
            for name, part in result[1].items():
                parts.setdefault(name, []).append(part)
        for attribute in protos[0].attribute:
            if attribute.name == "N":
                attribute.i = array.shape[1]
        return protos, {name: np.concatenate(pieces, axis=0) for name, pieces in parts.items()}

    def _quantize_alone(self, node: Any, weight_name: str, array: Any) -> tuple[list[Any], dict[str, Any]] | None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        from onnxruntime.quantization.quant_utils import QuantFormat

        ir = _ir()
        quant = self.builder.quant_attrs
        model = onnx.ModelProto(ir_version=10)
        model.opset_import.add(domain="", version=21)
        model.graph.name = "one"
        model.graph.node.add().CopyFrom(node)
        model.graph.initializer.add().CopyFrom(ir.serde.serialize_tensor(ir.Tensor(array, name=weight_name)))
        quantizer = MatMulNBitsQuantizer(
            model=model, bits=quant["bits"], block_size=quant["matmul_block_size"],
            is_symmetric=quant["is_symmetric"], accuracy_level=quant["accuracy_level"],
            nodes_to_exclude=list(quant["nodes_to_exclude"]), quant_format=QuantFormat.QOperator,
            op_types_to_quantize=quant["op_types_to_quantize"], algo_config=None,
        )
        del model
        quantizer.process()
        out = quantizer.model.model.graph
        if [n.op_type for n in out.node] == [node.op_type]:
            return None  # the quantizer left it as it was (e.g. not a 2-D weight)
        arrays = {t.name: ir.from_proto(t).numpy().copy() for t in out.initializer if t.name != weight_name}
        return list(out.node), arrays

    def _node(self, proto: Any, old: Any) -> Any:
        ir = _ir()
        inputs = [self.builder.make_value(name) if name else None for name in proto.input]
        by_name = {v.name: v for v in old.inputs if v is not None}
        inputs = [by_name.get(v.name, v) if v is not None else None for v in inputs]
        outputs = [ir.Value(name=name) for name in proto.output]
        attributes = [ir.serde.deserialize_attribute(a) for a in proto.attribute]
        return ir.Node(proto.domain, proto.op_type, inputs, attributes, outputs=outputs, name=proto.name)

    def _spill(self, value: Any) -> None:
        ir = _ir()
        tensor = value.const_value
        offset = self.scratch_file.tell()
        if hasattr(tensor, "tofile"):
            tensor.tofile(self.scratch_file)
        else:
            self.scratch_file.write(tensor.tobytes())
        self.scratch_file.flush()
        length = self.scratch_file.tell() - offset
        value.const_value = ir.ExternalTensor(self.scratch.name, offset, length, tensor.dtype, shape=tensor.shape,
                                              name=value.name, base_dir=str(self.scratch.parent))

    # -- the finished graph ------------------------------------------------------------

    def finish(self) -> Any:
        """The model ``save_model`` writes: initializers in the plain path's order (the kept
        ones as registered, then the quantizer's in node order) and its opset imports."""
        self.flush()
        self.scratch_file.close()
        graph = self.builder.model.graph
        values = dict(graph.initializers)
        produced = set(self.produced)
        order = [n for n in values if n not in produced] + [n for n in self.produced if n in values]
        graph.initializers.clear()
        for name in order:
            graph.register_initializer(values[name])
        model = self.builder.model
        for domain, version in self.opsets.items():
            model.opset_imports[domain] = version
        if "Gather" in self.builder.quant_attrs["op_types_to_quantize"] and model.opset_imports.get("", 21) < 21:
            model.opset_imports[""] = 21
        return model


class Unsupported(Exception):
    """This checkpoint cannot be streamed; the plain path converts it."""


def _ir() -> Any:
    import onnx_ir

    return onnx_ir


def install(base: Any, log: Any = print) -> dict[str, Any]:
    """Patch ``base.Model`` so each build streams when ``plan`` allows; returns a report."""
    report: dict[str, Any] = {"streamed": False, "reason": None}
    original_make = base.Model.make_model

    def make_model(self: Any, input_path: str) -> Any:
        reason = plan(self, base, input_path)
        streamer = None
        if reason is None:
            scratch = Path(self.cache_dir) / "onnxg-streamed.bin"
            try:
                streamer = Streamer(self, Path(input_path), scratch)
                skeleton = streamer.skeleton()
            except Unsupported as exc:
                reason, streamer = str(exc), None
        if streamer is None:
            report["reason"] = reason
            log(f"onnxg: plain builder path ({reason})")
            return original_make(self, input_path)
        log("onnxg: building layer by layer (weights streamed from safetensors)")
        self.load_weights = lambda path: skeleton
        if streamer.quantize:
            self.to_nbits = streamer.finish
        try:
            result = original_make(self, input_path)
        finally:
            del self.load_weights
        if not streamer.quantize:
            streamer.finish()
        report.update(streamed=True, largest_unit_bytes=streamer.peak_unit, scratch=str(streamer.scratch))
        return result

    base.Model.make_model = make_model
    return report
