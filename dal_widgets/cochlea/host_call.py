"""Host functions called from jitted programs that JAX's persistent compilation cache can keep.

jax's own Python callbacks (`pure_callback`, `buffer_callback`) put a Python object into the
program, and JAX never caches such a program: every new process compiled each CPU program that
runs the CARFAC kernel again (a fine-tune step: about 13 s on 2 cores). Here a program calls one
XLA FFI handler (native/host_call.c, built into the kernel's library) with a string attribute
that names a Python handler and its static arguments. The handler runs on the host with XLA's
buffers as numpy arrays, and writes its results into them in place.

Usage: `register(name, fn)` once per process, then `call(name, payload, shapes, *args)` inside a
traced function; `fn(payload, outs, args)` receives the payload string, the result buffers to
write and the argument buffers (numpy arrays, leading batch axes under `vmap`).
"""
import ctypes
import math
from typing import Callable

import jax
import numpy as np

TARGET = "dal_host_call"  # the FFI target name programs refer to (stable across processes)
SEPARATOR = "\n"  # between the handler name and its payload in the string attribute
# XLA's PrimitiveType numbers (xla/ffi/api/c_api.h, XLA_FFI_DataType) of the dtypes handled here.
DTYPES = {1: np.bool_, 4: np.int32, 5: np.int64, 11: np.float32, 12: np.float64}

_HOST_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                            ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p),
                            ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p, ctypes.c_int64)
_handlers: dict[str, Callable] = {}
_installed = []  # [the ctypes callback, the library]: kept alive for the process's lifetime


def _buffer(ptr, dtype_code: int, shape: tuple) -> np.ndarray:
  """A numpy view of one XLA buffer (a fresh empty array when it holds no elements)."""
  dtype = np.dtype(DTYPES[dtype_code])
  size = math.prod(shape)
  if size == 0:
    return np.empty(shape, dtype)
  raw = (ctypes.c_char * (size * dtype.itemsize)).from_address(ptr)
  return np.frombuffer(raw, dtype).reshape(shape)


def _dispatch(call_ptr, call_len, n_args, n_rets, data, meta, err, err_len) -> int:
  """The host function the FFI handler calls (ctypes; holds the GIL while it runs)."""
  try:
    name, payload = ctypes.string_at(call_ptr, call_len).decode().split(SEPARATOR, 1)
    buffers, k = [], 0
    for i in range(n_args + n_rets):
      code, rank = meta[k], meta[k + 1]
      buffers.append(_buffer(data[i], code, tuple(meta[k + 2:k + 2 + rank])))
      k += 2 + rank
    _handlers[name](payload, buffers[n_args:], buffers[:n_args])
    return 0
  except BaseException as error:  # noqa: BLE001  an exception must not cross into C
    message = f"{type(error).__name__}: {error}".encode()[:err_len - 1]
    ctypes.memmove(err, message + b"\0", len(message) + 1)
    return 1


def install(lib) -> bool:
  """Registers the FFI target from `lib` (a ctypes library with native/host_call.c) once per
  process; returns whether `call` can be used."""
  if _installed:
    return True
  if not hasattr(lib, "dal_host_call"):
    return False
  callback = _HOST_FN(_dispatch)
  lib.dal_host_call_set.argtypes = [_HOST_FN]
  lib.dal_host_call_set(callback)
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.dal_host_call), platform="cpu")
  _installed.extend([callback, lib])
  return True


def installed() -> bool:
  """Whether `install` has succeeded in this process (then `call` works)."""
  return bool(_installed)


def register(name: str, fn: Callable) -> None:
  """Makes `fn(payload, outs, args)` callable as `name` (before any program calling it runs)."""
  if SEPARATOR in name:
    raise ValueError(f"handler names cannot contain {SEPARATOR!r}: {name!r}")
  _handlers[name] = fn


def call(name: str, payload: str, result_shapes, *args, vmap_method: str = "broadcast_all"):
  """Calls handler `name` from a traced function; returns arrays shaped as `result_shapes`
  (a sequence of jax.ShapeDtypeStruct). `payload` should hold what the handler needs besides
  the arrays, deterministically (it is part of the compilation cache key)."""
  if not _installed:
    raise RuntimeError("host_call.install() has not succeeded in this process")
  if name not in _handlers:
    raise KeyError(f"no host handler registered as {name!r}")
  return jax.ffi.ffi_call(TARGET, tuple(result_shapes), vmap_method=vmap_method)(
      *args, call=f"{name}{SEPARATOR}{payload}")
