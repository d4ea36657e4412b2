"""TensorFlow's string hash (FarmHash ``Fingerprint64``) and the ONNX op that applies it.

Why this exists: tf2onnx exports ``tf.strings.to_hash_bucket_fast`` as the
onnxruntime-extensions op ``StringToHashBucketFast``, whose 0.15.x kernel computes a
different hash from TensorFlow's, so every bucket (and every embedding row looked up from
it) is wrong. The converter rewrites that node to ``TFStringToHashBucketFast``, defined here
as an onnxruntime-extensions Python op that computes exactly what TensorFlow does:
``Fingerprint64(utf8 bytes) % num_buckets``.

This module imports only the standard library at import time (the tf converter's worker
loads it by path, without onnxg), and numpy/onnxruntime_extensions inside
``register_onnx_ops``.
"""

from __future__ import annotations

import struct
from typing import Any

OP_TYPE = "TFStringToHashBucketFast"
DOMAIN = "ai.onnx.contrib"

_MASK = (1 << 64) - 1
_K0 = 0xC3A5C85C97CB3127
_K1 = 0xB492B66FBE98F273
_K2 = 0x9AE16A3B2F90404F


def _fetch64(data: bytes, pos: int) -> int:
    return struct.unpack_from("<Q", data, pos)[0]


def _fetch32(data: bytes, pos: int) -> int:
    return struct.unpack_from("<I", data, pos)[0]


def _rotate(value: int, shift: int) -> int:
    return value if shift == 0 else ((value >> shift) | (value << (64 - shift))) & _MASK


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def _hash_len16(u: int, v: int, mul: int) -> int:
    a = ((u ^ v) * mul) & _MASK
    a ^= a >> 47
    b = ((v ^ a) * mul) & _MASK
    b ^= b >> 47
    return (b * mul) & _MASK


def _hash_len0to16(s: bytes, length: int) -> int:
    if length >= 8:
        mul = _K2 + length * 2
        a = (_fetch64(s, 0) + _K2) & _MASK
        b = _fetch64(s, length - 8)
        c = (_rotate(b, 37) * mul + a) & _MASK
        d = ((_rotate(a, 25) + b) * mul) & _MASK
        return _hash_len16(c, d, mul)
    if length >= 4:
        mul = _K2 + length * 2
        a = _fetch32(s, 0)
        return _hash_len16((length + (a << 3)) & _MASK, _fetch32(s, length - 4), mul)
    if length > 0:
        y = (s[0] + (s[length >> 1] << 8)) & 0xFFFFFFFF
        z = (length + (s[length - 1] << 2)) & 0xFFFFFFFF
        return (_shift_mix(((y * _K2) ^ (z * _K0)) & _MASK) * _K2) & _MASK
    return _K2


def _hash_len17to32(s: bytes, length: int) -> int:
    mul = _K2 + length * 2
    a = (_fetch64(s, 0) * _K1) & _MASK
    b = _fetch64(s, 8)
    c = (_fetch64(s, length - 8) * mul) & _MASK
    d = (_fetch64(s, length - 16) * _K2) & _MASK
    return _hash_len16(
        (_rotate((a + b) & _MASK, 43) + _rotate(c, 30) + d) & _MASK,
        (a + _rotate((b + _K2) & _MASK, 18) + c) & _MASK,
        mul,
    )


def _hash_len33to64(s: bytes, length: int) -> int:
    mul = _K2 + length * 2
    a = (_fetch64(s, 0) * _K2) & _MASK
    b = _fetch64(s, 8)
    c = (_fetch64(s, length - 8) * mul) & _MASK
    d = (_fetch64(s, length - 16) * _K2) & _MASK
    y = (_rotate((a + b) & _MASK, 43) + _rotate(c, 30) + d) & _MASK
    z = _hash_len16(y, (a + _rotate((b + _K2) & _MASK, 18) + c) & _MASK, mul)
    e = (_fetch64(s, 16) * mul) & _MASK
    f = _fetch64(s, 24)
    g = ((y + _fetch64(s, length - 32)) * mul) & _MASK
    h = ((z + _fetch64(s, length - 24)) * mul) & _MASK
    return _hash_len16(
        (_rotate((e + f) & _MASK, 43) + _rotate(g, 30) + h) & _MASK,
        (e + _rotate((f + a) & _MASK, 18) + g) & _MASK,
        mul,
    )


def _weak_hash_len32(s: bytes, pos: int, a: int, b: int) -> tuple[int, int]:
    w, x, y, z = (_fetch64(s, pos + 8 * i) for i in range(4))
    a = (a + w) & _MASK
    b = _rotate((b + a + z) & _MASK, 21)
    c = a
    a = (a + x + y) & _MASK
    b = (b + _rotate(a, 44)) & _MASK
    return (a + z) & _MASK, (b + c) & _MASK


def fingerprint64(data: bytes) -> int:
    """FarmHash ``Fingerprint64`` (farmhashna ``Hash64``), as TensorFlow computes it."""
    length = len(data)
    if length <= 16:
        return _hash_len0to16(data, length)
    if length <= 32:
        return _hash_len17to32(data, length)
    if length <= 64:
        return _hash_len33to64(data, length)
    seed = 81
    x = seed
    y = (seed * _K1 + 113) & _MASK
    z = (_shift_mix((y * _K2 + 113) & _MASK) * _K2) & _MASK
    v = (0, 0)
    w = (0, 0)
    x = (x * _K2 + _fetch64(data, 0)) & _MASK
    end = ((length - 1) // 64) * 64
    last64 = end + ((length - 1) & 63) - 63
    pos = 0
    while True:
        x = (_rotate((x + y + v[0] + _fetch64(data, pos + 8)) & _MASK, 37) * _K1) & _MASK
        y = (_rotate((y + v[1] + _fetch64(data, pos + 48)) & _MASK, 42) * _K1) & _MASK
        x ^= w[1]
        y = (y + v[0] + _fetch64(data, pos + 40)) & _MASK
        z = (_rotate((z + w[0]) & _MASK, 33) * _K1) & _MASK
        v = _weak_hash_len32(data, pos, (v[1] * _K1) & _MASK, (x + w[0]) & _MASK)
        w = _weak_hash_len32(data, pos + 32, (z + w[1]) & _MASK, (y + _fetch64(data, pos + 16)) & _MASK)
        z, x = x, z
        pos += 64
        if pos == end:
            break
    mul = _K1 + ((z & 0xFF) << 1)
    pos = last64
    w0 = (w[0] + ((length - 1) & 63)) & _MASK
    v0 = (v[0] + w0) & _MASK
    w0 = (w0 + v0) & _MASK
    v = (v0, v[1])
    w = (w0, w[1])
    x = (_rotate((x + y + v[0] + _fetch64(data, pos + 8)) & _MASK, 37) * mul) & _MASK
    y = (_rotate((y + v[1] + _fetch64(data, pos + 48)) & _MASK, 42) * mul) & _MASK
    x ^= (w[1] * 9) & _MASK
    y = (y + v[0] * 9 + _fetch64(data, pos + 40)) & _MASK
    z = (_rotate((z + w[0]) & _MASK, 33) * mul) & _MASK
    v = _weak_hash_len32(data, pos, (v[1] * mul) & _MASK, (x + w[0]) & _MASK)
    w = _weak_hash_len32(data, pos + 32, (z + w[1]) & _MASK, (y + _fetch64(data, pos + 16)) & _MASK)
    z, x = x, z
    return _hash_len16(
        (_hash_len16(v[0], w[0], mul) + _shift_mix(y) * _K0 + z) & _MASK,
        (_hash_len16(v[1], w[1], mul) + x) & _MASK,
        mul,
    )


def hash_bucket_fast(text: str | bytes, num_buckets: int) -> int:
    """``tf.strings.to_hash_bucket_fast`` for one string."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return fingerprint64(data) % num_buckets


_registered = False


def register_onnx_ops(ocos: Any = None) -> None:
    """Define ``TFStringToHashBucketFast`` for onnxruntime-extensions (idempotent).

    ``ocos`` is the extensions' ``_ocos`` module (``onnxg.runtime.e2e`` loads it without the
    package's heavy ``__init__``); by default it is imported the ordinary way. Must run
    before an onnxruntime session registers the extensions' library.
    """
    global _registered
    if _registered:
        return
    import numpy as np

    if ocos is None:
        from onnxruntime_extensions import _ocos as ocos

    @ocos.Opdef.declare(op_type=OP_TYPE, domain=DOMAIN,
                        inputs=[ocos.PyCustomOpDef.dt_string, ocos.PyCustomOpDef.dt_int64],
                        outputs=[ocos.PyCustomOpDef.dt_int64])
    def _bucket(texts: Any, num_buckets: Any) -> Any:
        buckets = int(np.asarray(num_buckets).reshape(-1)[0])
        flat = [hash_bucket_fast(t, buckets) for t in np.asarray(texts).reshape(-1)]
        return np.array(flat, dtype=np.int64).reshape(np.asarray(texts).shape)

    _registered = True
