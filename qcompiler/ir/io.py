"""ONNX <-> IR, and safe writing of models.

Loading accepts a path (external data next to the model is followed) or a ModelProto.
Every failure to read is a one-line ModelError naming the problem and the fix.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from ..errors import ModelError, UsageError
from ..quant.int4 import FOUR_BIT_TYPES, pack_4bit_constants
from .graph import IR

TWO_GB = 2**31 - 1
MIN_OPSET = 7


def read_model(path: Union[str, os.PathLike], lazy: bool = False) -> onnx.ModelProto:
    """The model at `path` with its external data.

    lazy=True leaves the data of external initializers in their files: the tensors keep
    pointing at them (by absolute path, so only for use within qcompiler: model_to_ir reads
    a value when a pass needs it, exports and sessions copy it from the file). A model over
    2 GB then takes no memory for the weights that no pass reads.
    """
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
    if not (lazy and _point_at_external(model, p.parent)):
        _load_external(model, p.parent)
    return model


def _check_external_files(model: onnx.ModelProto, base: Path) -> None:
    from onnx.external_data_helper import uses_external_data

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


def _load_external(model: onnx.ModelProto, base: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    _check_external_files(model, base)
    if any(uses_external_data(t) for t in _all_tensors(model.graph)):
        try:
            load_external_data_for_model(model, str(base))
        except Exception as e:
            raise ModelError(f"cannot read the model's external data: {e}",
                             "the external data file is truncated or was moved") from None


def _all_tensors(graph: onnx.GraphProto):
    """Initializers and attribute tensors of a graph and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _point_at_external(model: onnx.ModelProto, base: Path) -> bool:
    """Lazy external data: check each external initializer's file and byte range, and make
    its location absolute. False (nothing changed) when some external tensor is not a
    top-level initializer: the caller loads everything then."""
    from onnx.external_data_helper import uses_external_data

    top = [t for t in model.graph.initializer if uses_external_data(t)]
    if not top:
        return True
    if sum(1 for t in _all_tensors(model.graph) if uses_external_data(t)) != len(top):
        return False
    _check_external_files(model, base)
    sizes = {}
    for t in top:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if not loc or os.path.isabs(loc) or ".." in Path(loc).parts:
            raise ModelError(f"initializer '{t.name}' points at external data '{loc}' outside the model's folder",
                             "keep the external data files next to the model (or in a folder below it)")
        f = (base / loc).resolve()
        if f not in sizes:
            sizes[f] = f.stat().st_size
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else _dims_nbytes(t)
        except ValueError:
            raise ModelError(f"initializer '{t.name}' has a malformed external data offset or length",
                             "re-export the model") from None
        if offset < 0 or length < 0 or offset + length > sizes[f]:
            raise ModelError(f"cannot read the model's external data: initializer '{t.name}' needs bytes "
                             f"{offset} to {offset + length} of '{loc}', which holds {sizes[f]}",
                             "the external data file is truncated or was moved")
        del t.external_data[:]
        for k, v in (("location", str(f)), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
    return True


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
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant):
            lazy = FileValues.of(t._values)
            if lazy is not None:
                t._values, t.data_location = lazy, None
    ir = IR(graph, meta)
    ir.name_nodes()
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


def load_ir(source: Union[str, os.PathLike, onnx.ModelProto]) -> IR:
    model = source if isinstance(source, onnx.ModelProto) else read_model(source)
    return model_to_ir(model)


def ir_to_model(ir: IR) -> onnx.ModelProto:
    """The IR as a self-contained ModelProto (values read lazily from files are read here).

    Large constants are exported as placeholders and get their data afterwards, straight
    from their numpy array, TensorProto or file: exporting them through onnx-graphsurgeon
    would copy each one twice more (bytes, then the TensorProto that make_graph copies).
    """
    model, layout = ir_skeleton(ir, _INLINE)
    return _inline(model, layout)


_INLINE = "qcompiler-inline"  # placeholder location of tensors that _inline fills in


def _inline(model: onnx.ModelProto, layout: "DataLayout") -> onnx.ModelProto:
    """Put the data of the layout's tensors into their placeholders in `model`."""
    if layout.size > SESSION_FILE_BYTES:
        gc.collect()  # constants that passes dropped may sit in reference cycles: free them first
    if layout.entries:
        by_name = {t.name: t for t in model.graph.initializer}
        for _, nbytes, name, source in layout.entries:
            t = by_name[name]
            del t.external_data[:]
            t.ClearField("data_location")
            t.raw_data = _source_bytes(source, nbytes, name)
    return model


def _export(ir: IR) -> onnx.ModelProto:
    g = ir.graph
    pack_4bit_constants(g)
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


def _min_ir_version(opset: int) -> int:
    try:
        from onnx.helper import find_min_ir_version_for

        return find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    except Exception:
        return 7


def _dims_nbytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's data from its shape and type; 0 for strings and unknown types."""
    count = 1
    for d in t.dims:
        count *= int(d)
    if t.data_type in FOUR_BIT_TYPES:
        return (count + 1) // 2
    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 0
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        return 0


def raw_nbytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's raw_data (0 without), from its shape and type where it can:
    reading t.raw_data copies it."""
    if not t.HasField("raw_data"):
        return 0
    return _dims_nbytes(t) or len(t.raw_data)


def model_size(model: onnx.ModelProto) -> int:
    """Bytes the model would take: initializer data plus the rest of the proto.

    Small models are measured exactly (ByteSize). From 64 MB of tensor data on, and for
    models whose data stays in external files (read_model(lazy=True)), the tensor data is
    counted from the shapes and added to the size of the nodes: ByteSize() serializes the
    whole proto (a copy of every weight) and fails over 2 GB.
    """
    data = other = 0
    lazy = False
    for t in model.graph.initializer:
        n = raw_nbytes(t)
        if not n and FileValues.of_tensor(t) is not None:
            n, lazy = FileValues.of_tensor(t).length, True
        if n:
            data += n
        else:
            other += t.ByteSize()
    if data < min(TWO_GB // 2, 64 << 20) and not lazy:
        return model.ByteSize()
    return data + other + sum(n.ByteSize() for n in model.graph.node)


def default_file_mode() -> int:
    """The mode a plain open() would give a new file (see qcompiler.outputs)."""
    from ..outputs import default_file_mode as mode

    return mode()


def check_writable(path: Path, force: bool, what: str = "output",
                   hint: str = "choose another output path") -> Path:
    """A file may be written at `path`: a regular file or none (an existing one only with
    --force), in a writable folder. Returns the folder. Commands check their outputs with
    qcompiler.outputs.OutputPlan, which also refuses their inputs."""
    from ..outputs import check_folder, folder_of, special_kind

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} '{path}' is a folder", "give a file name for the output model")
    kind = special_kind(path)
    if kind:
        raise UsageError(f"{what} '{path}' is {kind}, not a regular file", hint)
    if os.path.lexists(path) and not force:
        raise UsageError(f"{what} '{path}' already exists", "pass --force to overwrite it")
    parent = folder_of(path)
    check_folder(parent, what, hint)
    return parent


def save_model(model: onnx.ModelProto, path: Union[str, os.PathLike], force: bool = False,
               external_data: bool | None = None) -> Path:
    """Write atomically through qcompiler.outputs.staged: temporary files in the target
    folder, renamed into place once complete.

    External data is used when asked, or automatically when the model is over 2 GB. The
    caller's model is not modified, and no copy of its tensors is made: the proto is
    written without its large tensors, which are streamed into OUT.data one by one.
    """
    from ..outputs import staged

    out = Path(path)
    parent = check_writable(out, force)
    use_ext = external_data if external_data is not None else model_size(model) > TWO_GB
    if use_ext:
        ext_name = out.name + ".data"
        skeleton, layout = external_skeleton(model, ext_name)
        files = [parent / ext_name, out] if layout.entries else [out]  # no data file without big tensors
        with staged(*files) as tmps:
            if layout.entries:
                layout.write(tmps[0])
            onnx.save_model(skeleton, str(tmps[-1]))
        return out
    with staged(out) as (tmp,):
        if model_data_bytes(model)[1]:  # data left in files (read_model(lazy=True)): read it in
            model = _inline(*external_skeleton(model, _INLINE, threshold=TWO_GB))
        onnx.save_model(model, str(tmp))
    return out


# ---------------------------------------------------------------- large models: external data

EXTERNAL_MIN_BYTES = 1024  # tensors from this size on go to the external data file
# A session for a model with more tensor data than this loads it from a temporary external
# data file (ONNX Runtime maps the file instead of parsing a serialized copy, and weight
# pre-packing, which would keep a second copy, is off); over 2 GB there is no other way.
SESSION_FILE_BYTES = 256 << 20
_ALIGN = 64  # tensor offsets in data files we write
_CHUNK = 64 << 20  # file-to-file copies go in pieces this big


class FileValues(gs.ir.tensor.LazyValues):
    """The values of an initializer that stay in an external data file (read_model(lazy=True))
    until a pass reads them: then one read into a fresh array, no TensorProto copy."""

    def __init__(self, tensor: onnx.TensorProto, path: str, offset: int, length: int):
        super().__init__(tensor)
        self.path, self.offset, self.length = path, offset, length

    @classmethod
    def of_tensor(cls, t: onnx.TensorProto) -> Optional["FileValues"]:
        """For a tensor that points at its data by absolute path; else None."""
        if t.data_location != onnx.TensorProto.EXTERNAL:
            return None
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if not os.path.isabs(loc):
            return None
        return cls(t, loc, int(info.get("offset", 0)), int(info.get("length", _dims_nbytes(t))))

    @classmethod
    def of(cls, values) -> Optional["FileValues"]:
        if isinstance(values, FileValues):
            return values
        if type(values) is gs.ir.tensor.LazyValues:
            return cls.of_tensor(values.tensor)
        return None

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.length)
        if len(data) != self.length:
            raise ModelError(f"cannot read the model's external data: '{self.path}' ends before tensor "
                             f"'{self.tensor.name}'", "the external data file was truncated during the build")
        return data

    def copy_to(self, out, at: int) -> None:
        """Write the bytes into the open binary file `out` from offset `at`, in pieces (in the
        kernel where it can: no copy through memory)."""
        out.flush()
        done = 0
        with open(self.path, "rb") as f:
            while done < self.length:
                n = min(_CHUNK, self.length - done)
                got = 0
                if hasattr(os, "copy_file_range"):
                    try:
                        got = os.copy_file_range(f.fileno(), out.fileno(), n, self.offset + done, at + done)
                    except OSError:
                        got = 0
                if got <= 0:
                    f.seek(self.offset + done)
                    piece = f.read(n)
                    if not piece:
                        raise ModelError(f"cannot read the model's external data: '{self.path}' ends before "
                                         f"tensor '{self.tensor.name}'",
                                         "the external data file was truncated during the build")
                    out.seek(at + done)
                    out.write(piece)
                    out.flush()
                    got = len(piece)
                done += got
        out.seek(at + done)

    def load(self):
        t = self.tensor
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        except Exception:
            dtype = None
        count = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        if dtype is None or dtype.kind not in "biufc" or count * dtype.itemsize != self.length:
            proto = onnx.TensorProto()  # unusual types: as onnx reads them
            _copy_fields(t, proto, {"external_data", "data_location"})
            proto.raw_data = self.read_bytes()
            return gs.ir.tensor.LazyValues(proto).load()
        arr = np.fromfile(self.path, dtype=dtype.newbyteorder("<"), count=count, offset=self.offset)
        if arr.size != count:
            raise ModelError(f"cannot read the model's external data: '{self.path}' ends before tensor "
                             f"'{t.name}'", "the external data file was truncated during the build")
        return arr.astype(dtype, copy=False).reshape(self.shape)


class DataLayout:
    """Where the large tensors of a skeleton model go in its external data file, and where
    their bytes come from (a TensorProto's raw_data, a numpy array or a FileValues), written
    one at a time."""

    def __init__(self, location: str):
        self.location = location
        self.entries = []  # (offset, nbytes, name, source)
        self.size = 0

    def add(self, name: str, data_type: int, dims, nbytes: int, source) -> onnx.TensorProto:
        """The placeholder TensorProto for one tensor (with the doc_string and metadata_props
        of the source's TensorProto)."""
        offset = -(-self.size // _ALIGN) * _ALIGN
        t = onnx.TensorProto()
        like = source.tensor if isinstance(source, FileValues) else source
        if isinstance(like, onnx.TensorProto):  # field by field: ListFields() would copy raw_data
            if like.doc_string:
                t.doc_string = like.doc_string
            if len(getattr(like, "metadata_props", ())):
                t.metadata_props.extend(like.metadata_props)
        t.name, t.data_type = name, data_type
        t.dims.extend(int(d) for d in dims)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(offset)), ("length", str(nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.entries.append((offset, nbytes, name, source))
        self.size = offset + nbytes
        return t

    def write(self, path: Union[str, os.PathLike]) -> None:
        with open(path, "wb") as f:
            for offset, nbytes, name, source in self.entries:
                if isinstance(source, FileValues):
                    source.copy_to(f, offset)
                    continue
                f.seek(offset)
                if isinstance(source, onnx.TensorProto):
                    data = source.raw_data  # a copy of this one tensor, dropped after the write
                else:
                    data = np.ascontiguousarray(source).reshape(-1).view(np.uint8)
                if len(data) != nbytes:
                    raise ModelError(f"initializer '{name}' holds {len(data)} bytes of data but its shape and "
                                     f"type make {nbytes}", "the model is corrupt; re-export it")
                f.write(data)
                del data
            f.truncate(self.size)


def _source_bytes(source, nbytes: int, name: str) -> bytes:
    if isinstance(source, FileValues):
        data = source.read_bytes()
    elif isinstance(source, onnx.TensorProto):
        data = source.raw_data
    else:
        data = np.ascontiguousarray(source).tobytes()
    if len(data) != nbytes:
        raise ModelError(f"initializer '{name}' holds {len(data)} bytes of data but its shape and type make "
                         f"{nbytes}", "the model is corrupt; re-export it")
    return data


def _copy_fields(src, dst, skip) -> None:
    """dst gets every field of src but those in `skip` (field by field)."""
    skip = {skip} if isinstance(skip, str) else set(skip)
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if isinstance(value, (bytes, str, int, float, bool)):
            setattr(dst, fd.name, value)
        elif hasattr(value, "extend"):
            getattr(dst, fd.name).extend(value)
        else:
            getattr(dst, fd.name).CopyFrom(value)


def external_skeleton(model: onnx.ModelProto, location: str,
                      threshold: Optional[int] = None) -> "tuple[onnx.ModelProto, DataLayout]":
    """A copy of `model` whose top-level initializers of `threshold` bytes or more (and those
    whose data was left in files) point at `location` instead of holding their data; the
    layout writes that file (threshold: EXTERNAL_MIN_BYTES by default). No tensor data is
    copied, and the model is not modified."""
    threshold = EXTERNAL_MIN_BYTES if threshold is None else threshold
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, "graph")
    _copy_fields(model.graph, skeleton.graph, "initializer")
    layout = DataLayout(location)
    for t in model.graph.initializer:
        lazy = FileValues.of_tensor(t)
        n = raw_nbytes(t)
        if lazy is not None:
            skeleton.graph.initializer.append(layout.add(t.name, t.data_type, t.dims, lazy.length, lazy))
        elif n >= threshold and n and t.data_location != onnx.TensorProto.EXTERNAL:
            skeleton.graph.initializer.append(layout.add(t.name, t.data_type, t.dims, n, t))
        else:
            skeleton.graph.initializer.append(t)
    return skeleton, layout


def _external_values(c: gs.Constant):
    """(data_type, dims, nbytes, source) of a constant whose data can be streamed, else None."""
    v = c._values
    if isinstance(v, FileValues):
        return v.tensor.data_type, list(v.tensor.dims), v.length, v
    if isinstance(v, gs.ir.tensor.SparseValues):
        return None
    if isinstance(v, gs.ir.tensor.LazyValues):
        t = v.tensor
        if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING:
            return None
        n = raw_nbytes(t)
        return (t.data_type, list(t.dims), n, t) if n else None
    arr = v if isinstance(v, np.ndarray) else None
    if arr is None or arr.dtype.kind not in "biuf" or arr.dtype.byteorder == ">" or c.export_dtype != arr.dtype:
        return None
    try:
        data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
    except Exception:
        return None
    return data_type, list(arr.shape), arr.nbytes, arr


def ir_skeleton(ir: IR, location: str = "weights.data",
                threshold: Optional[int] = None) -> "tuple[onnx.ModelProto, DataLayout]":
    """The IR as a ModelProto without the data of its large top-level constants (and of those
    still in files): they point at `location`, which the returned layout writes. Nothing is
    copied, and the IR is unchanged."""
    threshold = EXTERNAL_MIN_BYTES if threshold is None else threshold
    pack_4bit_constants(ir.graph)
    layout = DataLayout(location)
    swapped = []
    try:
        for c in ir.graph.tensors().values():
            if not isinstance(c, gs.Constant):
                continue
            info = _external_values(c)
            if info is None or (info[2] < threshold and not isinstance(info[3], FileValues)):
                continue
            data_type, dims, nbytes, source = info
            swapped.append((c, c._values, c.data_location))
            c._values = gs.ir.tensor.LazyValues(layout.add(c.name, data_type, dims, nbytes, source))
            c.data_location = None
        model = _export(ir)
    finally:
        for c, values, location_ in swapped:
            c._values, c.data_location = values, location_
    return model, layout


def model_data_bytes(model: onnx.ModelProto) -> "tuple[int, bool]":
    """Bytes of the tensor data, and whether some of it is still in files."""
    total, lazy = 0, False
    for t in model.graph.initializer:
        f = FileValues.of_tensor(t)
        if f is not None:
            total, lazy = total + f.length, True
        else:
            total += raw_nbytes(t)
    return total, lazy


def ir_data_bytes(ir: IR) -> "tuple[int, bool]":
    """Bytes of the IR's constants that ir_skeleton would move out, and whether some are in files."""
    total, lazy = 0, False
    for c in ir.graph.tensors().values():
        if isinstance(c, gs.Constant):
            info = _external_values(c)
            if info is not None and info[2] >= EXTERNAL_MIN_BYTES:
                total += info[2]
            lazy |= isinstance(c._values, FileValues)
    return total, lazy
