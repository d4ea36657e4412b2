"""Pinned converter environments ("toolchains"), created once and reused, as pipx does.

The converters cannot share one Python environment: onnxruntime-genai's model builder
imports classes that exist only in transformers 5, while optimum-onnx pins
transformers<4.58. So each converter runs as a subprocess (a worker script in
``convert/workers/``) under the interpreter of its own toolchain:

* if the current environment already satisfies a toolchain's requirements (``pip install
  'onnxg[convert]'`` makes it satisfy ``genai``), the current interpreter is used;
* otherwise a virtual environment is made under ``ONNXG_TOOLCHAINS`` (default
  ``ONNXG_HOME/toolchains``), named by a hash of its requirements and the Python version,
  and marked complete only when its install succeeded.

``versions()`` reports the installed versions, recorded in every conversion's provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from onnxg.runtime import home
from onnxg.runtime.errors import ToolchainError

WORKERS = Path(__file__).parent / "workers"
_MARKER = "onnxg-toolchain.json"


@dataclass(frozen=True)
class Toolchain:
    name: str
    requirements: tuple[str, ...]
    purpose: str

    @property
    def key(self) -> str:
        text = "\n".join((self.name, f"py{sys.version_info.major}.{sys.version_info.minor}", *self.requirements))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


TOOLCHAINS: dict[str, Toolchain] = {
    "genai": Toolchain(
        "genai",
        (
            "onnxruntime-genai>=0.16,<0.19",
            "onnx_ir>=0.1",
            "onnx>=1.17",
            "transformers>=5,<6",
            "torch==2.13.0",
            "accelerate>=1.0",
            "gguf>=0.10",
            "sentencepiece>=0.2",
            "protobuf>=4",
        ),
        "onnxruntime-genai model builder (chat models, GGUF)",
    ),
    "optimum": Toolchain(
        "optimum",
        (
            "optimum-onnx==0.1.0",
            "optimum>=2,<3",
            "transformers>=4.55,<4.58",
            "torch==2.13.0",
            "onnx>=1.17",
            "onnxruntime>=1.20",
            "sentencepiece>=0.2",
        ),
        "optimum ONNX export (embedding models)",
    ),
    "tf": Toolchain(
        "tf",
        (
            "tensorflow-cpu>=2.18,<2.22",
            "tf2onnx>=1.16,<1.18",
            "onnxruntime-extensions>=0.13",
            "onnxruntime>=1.20",
            "onnx>=1.17",
        ),
        "tf2onnx (TensorFlow SavedModels)",
    ),
}


def get(name: str) -> Toolchain:
    try:
        return TOOLCHAINS[name]
    except KeyError:
        raise ToolchainError(f"unknown toolchain {name!r}", f"known: {', '.join(TOOLCHAINS)}") from None


def _installed(requirements: Sequence[str]) -> dict[str, str] | None:
    """Installed versions if this environment satisfies every requirement, else None."""
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    for text in requirements:
        req = Requirement(text)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return None
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return None
        found[req.name] = version
    return found


def location(tc: Toolchain) -> Path:
    return home.toolchains_dir() / f"{tc.name}-{tc.key}"


def _venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with home.file_lock(path.with_suffix(".lock")):
        yield


def ready(name: str) -> bool:
    """True when ``ensure(name)`` would install nothing: an override, this environment, or a
    toolchain made before."""
    tc = get(name)
    if os.environ.get(f"ONNXG_TOOLCHAIN_{name.upper()}_PYTHON"):
        return True
    return _installed(tc.requirements) is not None or (location(tc) / _MARKER).is_file()


@dataclass(frozen=True)
class Resolved:
    toolchain: Toolchain
    python: Path
    versions: dict[str, str]
    shared: bool  # True when the current environment serves as the toolchain


def ensure(name: str, progress: Callable[[str], None] | None = None) -> Resolved:
    """The interpreter to run ``name``'s workers with, creating its environment if needed."""
    tc = get(name)
    override = os.environ.get(f"ONNXG_TOOLCHAIN_{name.upper()}_PYTHON")
    if override:
        return Resolved(tc, Path(override), _probe_versions(Path(override), tc), shared=False)
    here = _installed(tc.requirements)
    if here is not None:
        return Resolved(tc, Path(sys.executable), here, shared=True)
    path = location(tc)
    with _locked(path):
        marker = path / _MARKER
        if marker.is_file():
            return Resolved(tc, _venv_python(path), json.loads(marker.read_text())["versions"], shared=False)
        if path.exists():
            shutil.rmtree(path)  # an interrupted install
        log = home.ensure(home.logs_dir()) / f"toolchain-{tc.name}.log"
        if progress:
            progress(f"creating the {tc.name} toolchain (first use only, a few minutes): {path}; pip's log: {log}")
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(path)
            cmd = [str(_venv_python(path)), "-m", "pip", "install", "--disable-pip-version-check",
                   "--no-input", *tc.requirements]
            returncode = _pip(cmd, log, tc.name, progress)
            if returncode != 0:
                raise ToolchainError(
                    f"could not install the {tc.name} toolchain (pip exit {returncode}): {_last_line(log)}",
                    f"see {log}",
                )
            versions = _probe_versions(_venv_python(path), tc)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        marker.write_text(json.dumps({"name": tc.name, "requirements": tc.requirements, "versions": versions}, indent=2))
        return Resolved(tc, _venv_python(path), versions, shared=False)


def _pip(cmd: list[str], log: Path, name: str, progress: Callable[[str], None] | None) -> int:
    """Run pip with its output in ``log``; report its two long phases, so a first use that
    spends minutes here does not look hung."""
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", bufsize=1)
        assert proc.stdout is not None
        try:
            resolving = False
            for line in proc.stdout:
                out.write(line)
                if not progress:
                    continue
                if not resolving and line.startswith(("Collecting ", "Processing ")):
                    resolving = True
                    progress(f"{name} toolchain: resolving and downloading its packages")
                elif line.startswith("Installing collected packages:"):
                    packages = [p.strip() for p in line.split(":", 1)[1].split(",") if p.strip()]
                    progress(f"{name} toolchain: installing {len(packages)} packages")
            return proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, an error above): pip must not outlive us
                proc.kill()
                proc.wait()


def _probe_versions(python: Path, tc: Toolchain) -> dict[str, str]:
    from packaging.requirements import Requirement

    names = [Requirement(r).name for r in tc.requirements]
    code = (
        "import json,sys\nfrom importlib import metadata\nout={}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n]=metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n]=None\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True)
    if done.returncode != 0:
        raise ToolchainError(f"the {tc.name} toolchain at {python} does not run", done.stderr.strip()[-300:])
    return json.loads(done.stdout)


def run_worker(
    resolved: Resolved,
    worker: str,
    args: dict,
    log: Path,
    env: dict[str, str] | None = None,
) -> dict:
    """Run ``convert/workers/<worker>.py`` under the toolchain with JSON args; return its JSON result.

    The worker's own output goes to ``log``; on failure the error names the log.
    """
    script = WORKERS / f"{worker}.py"
    home.ensure(log.parent)
    result_path = log.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    payload = json.dumps({**args, "_result": str(result_path)})
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "a") as out:
        out.write(f"$ {resolved.python} {script} {payload}\n")
        out.flush()
        done = subprocess.run(
            [str(resolved.python), str(script), payload],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env,
        )
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if done.returncode != 0 or result.get("error"):
        detail = result.get("error") or _last_line(log)
        raise ToolchainError(f"{worker} failed: {detail}", f"the converter's log: {log}")
    return result


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
