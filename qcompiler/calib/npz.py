"""Memory-mapped members of a .npz file, so that a large calibration .npz is streamed like
a .npy instead of being read whole.

numpy.savez stores members uncompressed: each member is a .npy file at some offset of the
zip, which is mapped in place. numpy.savez_compressed deflates them: such a member is
inflated in pieces into an anonymous temporary file (unlinked at once, so nothing stays
behind whatever ends the process) and that file is mapped.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zipfile
from typing import Dict

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # the zip local file header, 30 bytes


def _npy_header(f):
    """(shape, fortran_order, dtype) of the .npy stream at f; f is left at the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _mapped(fileobj, offset: int, shape, fortran: bool, dtype: np.dtype) -> np.ndarray:
    if dtype.hasobject:
        raise ValueError("the array holds Python objects, which are never loaded (allow_pickle=False)")
    if int(np.prod(shape, dtype=np.int64)) == 0 or dtype.itemsize == 0:
        return np.empty(shape, dtype)
    return np.memmap(fileobj, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                     order="F" if fortran else "C")


def load_npz_mapped(path: str) -> Dict[str, np.ndarray]:
    """{member name without .npy: read-only array} for every member of the .npz at `path`."""
    out: Dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
        for info in z.infolist():
            if info.is_dir():
                continue
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
                if fields[0] != b"PK\x03\x04":
                    raise ValueError(f"member '{info.filename}' has no local header")
                raw.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
                shape, fortran, dtype = _npy_header(raw)
                out[name] = _mapped(path, raw.tell(), shape, fortran, dtype)
            else:
                with z.open(info) as member:
                    shape, fortran, dtype = _npy_header(member)
                    if dtype.hasobject:
                        _mapped(None, 0, shape, fortran, dtype)  # raises
                    tmp = tempfile.TemporaryFile()  # anonymous: gone when closed or the process ends
                    shutil.copyfileobj(member, tmp, 1 << 20)
                    tmp.flush()
                out[name] = _mapped(tmp, 0, shape, fortran, dtype)
    return out
