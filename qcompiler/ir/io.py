"""ONNX <-> IR, and safe writing of models.

Loading accepts a path (external data next to the model is followed) or a ModelProto.
Every failure to read is a one-line ModelError naming the problem and the fix.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from ..errors import ModelError, UsageError
from .graph import IR

TWO_GB = 2**31 - 1
MIN_OPSET = 7


def read_model(path: Union[str, os.PathLike]) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file '{p}' does not exist", "check the path")
    if p.is_dir():
        raise ModelError(f"'{p}' is a folder, not an ONNX model file", "pass the .onnx file itself")
    if p.stat().st_size == 0:
        raise ModelError(f"model file '{p}' is empty", "re-export the model")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ModelError(f"'{p}' is not a readable ONNX model ({type(e).__name__})",
                         "the file is truncated or not ONNX; re-export it") from None
    except Exception as e:  # protobuf raises various types for garbage input
        raise ModelError(f"'{p}' is not a readable ONNX model ({type(e).__name__}: {e})",
                         "the file is truncated or not ONNX; re-export it") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"'{p}' holds no ONNX graph", "the file is not an ONNX model; re-export it")
    _load_external(model, p.parent)
    return model


def _load_external(model: onnx.ModelProto, base: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    needed = set()
    for init in model.graph.initializer:
        if uses_external_data(init):
            for entry in init.external_data:
                if entry.key == "location":
                    needed.add(entry.value)
    for loc in sorted(needed):
        f = base / loc
        if not f.exists():
            raise ModelError(
                f"external data file '{loc}' of the model is missing (looked in '{base}')",
                "keep the model and its external data files in the same folder")
    if needed:
        try:
            load_external_data_for_model(model, str(base))
        except Exception as e:
            raise ModelError(f"cannot read the model's external data: {e}",
                             "the external data file is truncated or was moved") from None


def check_opset(model: onnx.ModelProto) -> int:
    opset = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None:
        raise ModelError("the model imports no default ONNX opset", "re-export it with an ONNX opset")
    if opset < MIN_OPSET:
        raise ModelError(f"the model uses opset {opset}; qcompiler supports opset {MIN_OPSET} and later",
                         "re-export the model with a newer opset")
    max_known = onnx.defs.onnx_opset_version()
    if opset > max_known:
        raise ModelError(f"the model uses opset {opset}, newer than this onnx package knows ({max_known})",
                         "upgrade the onnx package")
    return opset


def model_to_ir(model: onnx.ModelProto) -> IR:
    check_opset(model)
    _check_names(model)
    try:
        graph = gs.import_onnx(model)
    except Exception as e:
        raise ModelError(f"cannot import the model graph: {e}", "run onnx.checker on the model") from None
    meta = {
        "ir_version": model.ir_version,
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "model_version": model.model_version,
        "doc_string": model.doc_string,
        "metadata_props": {p.key: p.value for p in model.metadata_props},
        "opset_imports": {imp.domain: imp.version for imp in model.opset_import},
    }
    ir = IR(graph, meta)
    _name_nodes(ir)
    return ir


def _check_names(model: onnx.ModelProto) -> None:
    """Duplicate producers and dangling inputs are input errors, reported before import."""
    produced = {}
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    known |= {i.values.name for i in model.graph.sparse_initializer}
    for node in model.graph.node:
        for o in node.output:
            if not o:
                continue
            if o in produced:
                raise ModelError(f"tensor '{o}' is produced by two nodes ('{produced[o]}' and '{node.name}')",
                                 "tensor names must be unique; re-export the model")
            if o in {i.name for i in model.graph.input}:
                raise ModelError(f"tensor '{o}' is both a graph input and a node output",
                                 "tensor names must be unique; re-export the model")
            produced[o] = node.name or node.op_type
    known |= set(produced)
    for node in model.graph.node:
        if node.op_type in ("If", "Loop", "Scan"):
            continue  # subgraph scopes are checked by onnx itself
        for i in node.input:
            if i and i not in known:
                raise ModelError(
                    f"node '{node.name or node.op_type}' reads '{i}', which is neither an input, an initializer "
                    f"nor a node output", "the model is missing an initializer; re-export it")
    for o in model.graph.output:
        if o.name not in known:
            raise ModelError(f"graph output '{o.name}' is not produced by any node", "re-export the model")


def _name_nodes(ir: IR) -> None:
    """Give every node a unique, stable name (ONNX allows empty and repeated ones)."""
    seen = set()
    tensor_names = set(ir.tensors().keys())
    for i, node in enumerate(ir.graph.nodes):
        name = node.name
        if not name or name in seen or name in tensor_names:
            base = name or f"{node.op}_{i}"
            cand, k = base, 0
            while cand in seen or cand in tensor_names:
                k += 1
                cand = f"{base}_{k}"
            node.name = cand
        seen.add(node.name)
    ir._reindex_names()


def load_ir(source: Union[str, os.PathLike, onnx.ModelProto]) -> IR:
    model = source if isinstance(source, onnx.ModelProto) else read_model(source)
    return model_to_ir(model)


def ir_to_model(ir: IR) -> onnx.ModelProto:
    g = ir.graph
    _pack_4bit_constants(g)
    model = gs.export_onnx(g, do_type_check=False)
    meta = ir.model_meta
    imports = dict(meta.get("opset_imports", {}))
    imports[""] = int(g.opset)
    imports.pop("ai.onnx", None)
    for node in g.nodes:
        if node.domain and node.domain not in ("", "ai.onnx") and node.domain not in imports:
            imports[node.domain] = 1
    del model.opset_import[:]
    for domain in sorted(imports):
        model.opset_import.append(onnx.helper.make_opsetid(domain, imports[domain]))
    ir_version = meta.get("ir_version") or model.ir_version
    # An opset upgrade may need a newer IR version than the source model had.
    model.ir_version = max(ir_version, _min_ir_version(int(g.opset)))
    for key in ("producer_name", "producer_version", "domain", "doc_string"):
        if meta.get(key):
            setattr(model, key, meta[key])
    if meta.get("model_version"):
        model.model_version = meta["model_version"]
    del model.metadata_props[:]
    for k, v in sorted(meta.get("metadata_props", {}).items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return model


def _pack_4bit_constants(g: gs.Graph) -> None:
    """int4/uint4 constants whose values were read (ml_dtypes arrays, one byte per value)
    go back to ONNX tensors: gs 0.6 would export their bytes unpacked and fail."""
    for node in g.nodes:
        for t in node.inputs:
            if not isinstance(t, gs.Constant) or isinstance(t._values, gs.ir.tensor.LazyValues):
                continue
            name = getattr(t._values, "dtype", None)
            if name is not None and str(name) in ("int4", "uint4"):
                from onnx import numpy_helper

                t._values = gs.ir.tensor.LazyValues(numpy_helper.from_array(np.asarray(t._values), t.name))


def _min_ir_version(opset: int) -> int:
    try:
        from onnx.helper import find_min_ir_version_for

        return find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    except Exception:
        return 7


def model_size(model: onnx.ModelProto) -> int:
    """Bytes the model would take: initializer data plus the rest of the proto."""
    data = sum(len(t.raw_data) for t in model.graph.initializer)
    if data < TWO_GB // 2:
        return model.ByteSize()
    return data + sum(n.ByteSize() for n in model.graph.node)


# Write failures that come from the file system, not from a bug in qcompiler.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                 errno.ENAMETOOLONG}


def default_file_mode() -> int:
    """The mode a plain open() would give a new file: 0666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path: Path, force: bool, what: str = "output",
                   hint: str = "choose another output path") -> Path:
    """A file may be written at `path`: not there (or --force), in a writable folder.
    Returns the folder."""
    if path.exists() and not force:
        raise UsageError(f"{what} '{path}' already exists", "pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{what} folder '{parent}' does not exist", "create it first")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{what} folder '{parent}' is not writable", hint)
    return parent


def save_model(model: onnx.ModelProto, path: Union[str, os.PathLike], force: bool = False,
               external_data: bool | None = None) -> Path:
    """Write atomically: temporary file in the target folder, then rename into place.

    External data is used when asked, or automatically when the model is over 2 GB.
    """
    out = Path(path)
    parent = check_writable(out, force)
    if out.is_dir():
        raise UsageError(f"output '{out}' is a folder", "give a file name for the output model")
    use_ext = external_data if external_data is not None else model_size(model) > TWO_GB
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; give the output the usual mode
    ext_name = out.name + ".data"
    tmp_ext = None
    try:
        if use_ext:
            tmp_ext = parent / f".{ext_name}.tmp"
            # onnx moves the tensors out of the proto it saves: save a copy, not the caller's model.
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(copy, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=tmp_ext.name, size_threshold=1024)
            # The proto names the final data file; rename both into place.
            m = onnx.load(tmp, load_external_data=False)
            for init in m.graph.initializer:
                for entry in init.external_data:
                    if entry.key == "location":
                        entry.value = ext_name
            onnx.save_model(m, tmp)
            if tmp_ext.exists():  # absent when no tensor was over the threshold
                os.replace(tmp_ext, parent / ext_name)
            tmp_ext = None
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, out)
    except BaseException as e:
        for f in (tmp, tmp_ext):
            if f is not None and os.path.exists(f):
                os.unlink(f)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:  # the disk, not a bug
            full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise UsageError(f"cannot write output '{out}': {e.strerror}",
                             "free some space or choose another output path" if full
                             else "choose another output path") from None
        raise
    return out


def ort_session(model: onnx.ModelProto, options=None, providers=("CPUExecutionProvider",)):
    """An ONNX Runtime InferenceSession for a ModelProto of any size.

    Up to 2 GB the serialized proto goes to ONNX Runtime directly. Over 2 GB protobuf cannot
    serialize it ("Failed to serialize proto"), so the model's tensors are written to a
    temporary external data file that the session reads, and then loaded back into `model`,
    which ends up as it was (no second in-memory copy of the weights is made).
    """
    import onnxruntime as ort

    if model_size(model) <= TWO_GB:
        return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    from onnx.external_data_helper import convert_model_to_external_data, load_external_data_for_model

    inits = model.graph.initializer
    had_location = [t.HasField("data_location") for t in inits]
    with tempfile.TemporaryDirectory(prefix="qcompiler-ort-") as d:
        convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.data",
                                       size_threshold=1024)
        try:
            onnx.save_model(model, os.path.join(d, "model.onnx"))  # moves the tensor data to weights.data
            return ort.InferenceSession(os.path.join(d, "model.onnx"), options, providers=list(providers))
        finally:
            load_external_data_for_model(model, d)  # and back into the proto
            for t, had in zip(inits, had_location):
                if not had:
                    t.ClearField("data_location")
