"""The one gateway for every file a command writes.

A command first declares what it reads and what it will write (`OutputPlan`), before it
does any work; the plan refuses, with a one-line error:

- a path that names one of the command's inputs (also through a symlink or a hard link),
  even with --force: no command ever overwrites what it reads;
- anything that exists and is not a regular file (a folder, a device node, a pipe, a
  socket), even with --force;
- an existing file without --force;
- two outputs of one command that are the same file;
- a folder that does not exist or is not writable.

Files are then written through `staged()`: to a temporary file beside the destination, with
the mode a plain open() would give (0666 less the umask), renamed into place only when the
whole group is complete. An error or an interrupt (SIGINT, SIGTERM: see
qcompiler.interrupts) removes the temporary files; a SIGKILL leaves the previous output as
it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from .errors import UsageError

PathLike = Union[str, os.PathLike]

# Write failures that come from the file system, not from a bug in qcompiler.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENAMETOOLONG}
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def default_file_mode() -> int:
    """The mode a plain open() would give a new file: 0666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def special_kind(path: PathLike) -> Optional[str]:
    """What `path` is when it exists and is not a regular file (following symlinks), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent, or a dangling link: the rename replaces the link itself
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def same_file(a: PathLike, b: PathLike) -> bool:
    """The same file: one inode when both exist (symlinks, hard links, other spellings),
    else the same resolved path."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def folder_of(path: PathLike) -> Path:
    p = Path(path)
    return p.parent if str(p.parent) else Path(".")


def check_folder(folder: Path, what: str, hint: str) -> None:
    if not folder.is_dir():
        if folder.exists():
            raise UsageError(f"{what} folder '{folder}' is a file", hint)
        raise UsageError(f"{what} folder '{folder}' does not exist", "create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{what} folder '{folder}' is not writable", hint)


class OutputPlan:
    """The inputs and outputs of one command, checked before the command does any work.

        plan = OutputPlan("build", force=force)
        plan.input(model, "the input model")
        plan.input(calib)
        out = plan.file(output, "output", "-o")
        rep = plan.file(report, "report", "--report")
    """

    def __init__(self, command: str, force: bool = False):
        self.command = command
        self.force = force
        self.inputs: List[Tuple[str, str]] = []
        self.outputs: List[Tuple[Path, str]] = []

    def input(self, path: Optional[PathLike], label: Optional[str] = None) -> None:
        """A file (or folder) the command reads; `label` says what it is in messages."""
        if path is not None and str(path) != "":
            self.inputs.append((str(path), label or f"an input of the {self.command}"))

    def _reads(self, p: Path) -> Optional[str]:
        for i, label in self.inputs:
            if same_file(p, i):
                return label + (f" ('{i}')" if label.startswith("an input") and str(i) != str(p) else "")
            if os.path.isdir(i) and _inside(p, i):
                return f"inside the input folder '{i}'"
        return None

    def file(self, path: PathLike, what: str = "output", option: str = "-o",
             hint: Optional[str] = None) -> Path:
        """Check that `path` may be written as this command's `what`; returns it as a Path."""
        hint = hint or f"choose another {option} path"
        if str(path).strip() == "":
            raise UsageError(f"{option} is empty", f"give {option} a file name")
        p = Path(path)
        if p.is_dir():
            raise UsageError(f"{what} '{p}' is a folder", f"give {option} a file name")
        kind = special_kind(p)
        if kind:
            raise UsageError(f"{what} '{p}' is {kind}, not a regular file",
                             f"{option} must name a regular file or a new one; qcompiler never replaces devices, "
                             "pipes or sockets, even with --force")
        read = self._reads(p)
        if read:
            raise UsageError(f"{what} '{p}' is {read}",
                             f"{hint}; a command never overwrites its inputs, even with --force")
        for other, other_option in self.outputs:
            if same_file(p, other):
                raise UsageError(f"{option} and {other_option} name the same file '{p}'", hint)
        if os.path.lexists(p) and not self.force:
            raise UsageError(f"{what} '{p}' already exists", "pass --force to overwrite it")
        check_folder(folder_of(p), what, hint)
        self.outputs.append((p, option))
        return p

    def folder(self, path: PathLike, names: Sequence[str], what: str = "output folder", option: str = "--out",
               hint: Optional[str] = None) -> Path:
        """Check that files `names` (fnmatch patterns) may be written into folder `path`
        (created when missing, its parent must exist)."""
        import fnmatch

        hint = hint or f"choose another {option} folder"
        if str(path).strip() == "":
            raise UsageError(f"{option} is empty", f"give {option} a folder name")
        d = Path(path)
        if d.exists() and not d.is_dir():
            raise UsageError(f"{what} '{d}' is a file", f"{option} names a folder; {hint}")
        if d.is_dir():
            existing = [f for f in sorted(os.listdir(d)) if any(fnmatch.fnmatch(f, n) for n in names)]
            for f in existing:
                kind = special_kind(d / f)
                read = self._reads(d / f)
                if kind or read:
                    raise UsageError(f"'{d / f}' in {what} '{d}' is {kind or read}",
                                     f"{hint}; its files would be replaced")
            if existing and not self.force:
                raise UsageError(f"{what} '{d}' already holds {existing[0]}"
                                 + (f" and {len(existing) - 1} more" if len(existing) > 1 else ""),
                                 "pass --force to replace them")
            check_folder(d, what, hint)
        else:
            check_folder(folder_of(d), what, hint)
        for i, label in self.inputs:
            if same_file(d, i):
                raise UsageError(f"{what} '{d}' is {label}", hint)
        self.outputs.append((d, option))
        return d


def _inside(p: PathLike, folder: PathLike) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(p), os.path.realpath(folder)]) == os.path.realpath(folder)
    except ValueError:
        return False


def write_error(e: OSError, path: PathLike, what: str = "output") -> UsageError:
    full = e.errno in _FULL
    return UsageError(f"cannot write {what} '{path}': {e.strerror}",
                      "free some space or choose another output path" if full else "choose another output path")


def temp_beside(path: PathLike, what: str = "output") -> Path:
    """An empty temporary file in the folder of `path`, with the usual file mode."""
    out = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder_of(out))
        os.close(fd)
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; give the output the usual mode
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_error(e, out, what) from None
        raise
    return Path(tmp)


@contextlib.contextmanager
def staged(*paths: PathLike, what: str = "output") -> Iterator[List[Path]]:
    """Temporary files for `paths`; the block writes them, and they are renamed into place
    together (in order: the main file last) when it ends without error. Any error or
    interrupt removes them."""
    tmps: List[Path] = []
    try:
        for p in paths:
            tmps.append(temp_beside(p, what))
        yield tmps
        for tmp, p in zip(tmps, paths):
            kind = special_kind(p)  # appeared since the plan was checked
            if kind:
                raise UsageError(f"{what} '{p}' is {kind}, not a regular file", "choose another output path")
            os.replace(tmp, p)
    except BaseException as e:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:  # the disk, not a bug
            raise write_error(e, paths[-1], what) from None  # a group's main file comes last
        raise


def write_text(path: PathLike, text: str, what: str = "output") -> Path:
    with staged(path, what=what) as (tmp,):
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: PathLike, data: bytes, what: str = "output") -> Path:
    with staged(path, what=what) as (tmp,):
        tmp.write_bytes(data)
    return Path(path)
