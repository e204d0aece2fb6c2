"""Checkpoints: ``pydl.save(obj, path)`` and ``pydl.load(path)``.

A checkpoint is a state_dict: dotted names (``features.0.weight``, torch's
keys) -> arrays. The suffix picks the format:

- ``.safetensors``: the format torch, JAX and the Hugging Face hub share; a
  file pydl writes loads with ``safetensors.torch.load_file`` straight into the
  torch twin's ``load_state_dict``, and a torch-written one into pydl's.
  Optional ``metadata`` (str -> str) lives in its header.
- ``.npz``: NumPy's archive of ``.npy`` members, read with
  ``allow_pickle=False``: nothing in a checkpoint runs code.

Writes are atomic (a temporary file in the same directory, fsync, rename over
the target): a crash or an error mid-write leaves an existing checkpoint as it
was. Reads name the file and what is wrong with it (:class:`CheckpointError`,
a ``ValueError``) rather than surfacing a parser's traceback.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from . import _array
from .autograd import Tensor

__all__ = ["save", "load", "load_into", "load_metadata", "CheckpointError", "FORMATS"]

FORMATS = (".safetensors", ".npz")

# what safetensors' NumPy API reads back (bfloat16 and float8 have no NumPy dtype)
_SAFETENSORS_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.complex64))


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint: empty, truncated, corrupt or of another kind."""


# -- save ----------------------------------------------------------------------------------


def save(obj, path, metadata: dict[str, str] | None = None) -> None:
    """Write a state_dict (or a Module's ``state_dict()``) to ``path`` atomically.

    ``obj``: a Module, or a mapping of str -> array (NumPy, CuPy: brought to the
    host), Tensor or torch tensor. ``path``'s suffix picks the format (``.safetensors``
    or ``.npz``); ``metadata`` (str -> str) is stored in ``.safetensors`` headers.
    """
    fmt = _format(path, "save")
    arrays = _host_arrays(obj, fmt)
    if metadata is not None:
        if fmt != ".safetensors":
            raise ValueError(f"pydl.save: metadata is stored only in .safetensors files, not {fmt} ({path!r})")
        if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in metadata.items()):
            raise TypeError("pydl.save: metadata must be a dict of str -> str")
        metadata = dict(metadata)
    writer = _write_safetensors if fmt == ".safetensors" else _write_npz
    _atomic_write(path, lambda f: writer(f, arrays, metadata))


def _write_safetensors(f, arrays, metadata):
    import safetensors.numpy

    f.write(safetensors.numpy.save(arrays, metadata=metadata))


def _write_npz(f, arrays, metadata):
    # np.savez's layout (one stored .npy member per key), written member by member:
    # np.savez takes the arrays as keywords, so keys named "file" or "allow_pickle" would clash
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for k, a in arrays.items():
            with zf.open(k + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _host_arrays(obj, fmt):
    """``obj`` as an OrderedDict of host NumPy arrays the format can hold."""
    if not isinstance(obj, Mapping) and callable(getattr(obj, "state_dict", None)):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"pydl.save: expected a Module or a state_dict (a mapping of str -> array), "
                        f"got {type(obj).__name__}")
    out = OrderedDict()
    for k, v in obj.items():
        if not isinstance(k, str):
            raise TypeError(f"pydl.save: state_dict keys must be str, got {type(k).__name__} {k!r}")
        a = _host_array(k, v)
        if a.dtype.hasobject:
            raise TypeError(f"pydl.save: {k!r} is an object array; a checkpoint holds numeric arrays only")
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        if fmt == ".safetensors":
            if a.dtype not in _SAFETENSORS_DTYPES:
                raise TypeError(f"pydl.save: {k!r} has dtype {a.dtype}, which .safetensors cannot hold "
                                f"through NumPy; save it as .npz or cast it")
            if not a.flags.c_contiguous:  # safetensors reads the buffer from the data pointer on
                a = a.copy(order="C")
        out[k] = a
    return out


def _host_array(key, v):
    if isinstance(v, Tensor):
        v = v.data
    kind = _array.kind(v)
    if kind == "numpy":
        return v
    if kind == "cupy":
        return v.get()
    if isinstance(v, np.generic):
        return np.asarray(v)
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        try:
            return v.detach().cpu().numpy()
        except TypeError as e:  # bfloat16 and friends have no NumPy dtype
            raise TypeError(f"pydl.save: {key!r}: {e}") from e
    raise TypeError(f"pydl.save: {key!r} is a {type(v).__name__}, expected an array or a Tensor")


def _atomic_write(path, write):
    """Run ``write(f)`` on a temporary file next to ``path``, fsync it and rename it over
    ``path``; on any error the temporary file goes and ``path`` is untouched."""
    target = os.path.realpath(os.fspath(path))  # through a symlink: replace its target, keep the link
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"pydl.save: the directory of {os.fspath(path)!r} does not exist")
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = _new_file_mode()
    tmp = tempfile.NamedTemporaryFile(mode="wb", dir=directory, prefix="." + os.path.basename(target) + ".",
                                      suffix=".tmp", delete=False)
    try:
        with tmp as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp.name, mode)  # NamedTemporaryFile makes 0600; a checkpoint gets an ordinary file's mode
        os.replace(tmp.name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    _fsync_directory(directory)


def _new_file_mode():
    # the mode open() would give a new file; the umask can only be read by setting it
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_directory(directory):
    """Make the rename itself durable (where the platform lets a directory be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- load ----------------------------------------------------------------------------------


def load(path) -> "OrderedDict[str, np.ndarray]":
    """Read a checkpoint into an OrderedDict of NumPy arrays, in file order (``.safetensors``
    files keep theirs sorted by dtype and name).

    A missing file is a ``FileNotFoundError``; an empty, truncated, corrupt or foreign
    one a :class:`CheckpointError` (a ``ValueError``) naming the file and the fault.
    Pass the result to ``Module.load_state_dict``, or use :func:`load_into`.
    """
    fmt = _format(path, "load")
    return _read_safetensors(path) if fmt == ".safetensors" else _read_npz(path)


def load_into(module, path, strict: bool = True):
    """``module.load_state_dict(pydl.load(path), strict)``: returns ``(missing, unexpected)``.

    As ``load_state_dict``, every key, shape and dtype is checked before anything is
    written; its error (KeyError, ValueError, TypeError) also names the file."""
    state = load(path)
    try:
        return module.load_state_dict(state, strict=strict)
    except (KeyError, ValueError, TypeError) as e:
        if type(e) not in (KeyError, ValueError, TypeError):
            raise
        msg = e.args[0] if e.args else ""
        raise type(e)(f"{os.fspath(path)!r}: {msg}") from e


def load_metadata(path) -> dict[str, str]:
    """The ``metadata`` a ``.safetensors`` checkpoint was saved with (``{}`` if none)."""
    if _format(path, "serialization.load_metadata") != ".safetensors":
        raise ValueError(f"pydl.serialization.load_metadata: only .safetensors files hold metadata, "
                         f"got {os.fspath(path)!r}")
    import safetensors

    _check_nonempty(path)
    try:
        with safetensors.safe_open(os.fspath(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{os.fspath(path)!r} is not a readable .safetensors checkpoint: {e}") from e


def _read_safetensors(path):
    import safetensors.numpy

    with open(path, "rb") as f:  # FileNotFoundError names the path
        data = f.read()
    if not data:
        raise CheckpointError(f"{os.fspath(path)!r} is empty (0 bytes), not a .safetensors checkpoint")
    try:
        arrays = safetensors.numpy.load(data)
    except KeyError as e:  # a dtype NumPy has no type for
        raise CheckpointError(f"{os.fspath(path)!r} holds a tensor of dtype {e.args[0]}, which NumPy cannot "
                              f"represent (pydl reads {', '.join(sorted(str(d) for d in _SAFETENSORS_DTYPES))})"
                              ) from e
    except Exception as e:
        raise CheckpointError(f"{os.fspath(path)!r} is not a readable .safetensors checkpoint "
                              f"(truncated, corrupt or another kind of file): {e}") from e
    return OrderedDict(arrays)


def _read_npz(path):
    name = repr(os.fspath(path))
    out = OrderedDict()
    with open(path, "rb") as f:  # FileNotFoundError names the path
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{name} is empty (0 bytes), not a .npz checkpoint")
        if not zipfile.is_zipfile(f):
            raise CheckpointError(f"{name} is not a .npz checkpoint: not a zip archive ({size} bytes; "
                                  f"truncated, or another kind of file)")
        f.seek(0)
        try:
            z = np.load(f, allow_pickle=False)
        except Exception as e:
            raise CheckpointError(f"{name} is not a readable .npz checkpoint: {type(e).__name__}: {e}") from e
        with z:
            for k in z.files:
                try:
                    a = z[k]
                except Exception as e:  # a bad CRC, a truncated member, a pickled (object) array, ...
                    raise CheckpointError(f"{name} is not a readable .npz checkpoint: member {k!r}: "
                                          f"{type(e).__name__}: {e}") from e
                if not isinstance(a, np.ndarray):
                    raise CheckpointError(f"{name} is not a .npz checkpoint: member {k!r} is not a .npy array")
                out[k] = a
    return out


def _check_nonempty(path):
    size = os.stat(path).st_size  # FileNotFoundError names the path
    if size == 0:
        raise CheckpointError(f"{os.fspath(path)!r} is empty (0 bytes), not a checkpoint")
    return size


def _format(path, who):
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"pydl.{who}: path must be a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    suffix = os.path.splitext(p)[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"pydl.{who}: cannot tell the checkpoint format of {p!r} from its suffix "
                         f"{suffix or '(none)'!r}; supported: {', '.join(FORMATS)}")
    return suffix
