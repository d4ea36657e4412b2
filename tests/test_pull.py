"""`onnxg pull` against a fake hub on 127.0.0.1 (tests/hubkit.py), through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubkit import FakeHub
from onnxg.runtime import store
from onnxg.runtime.errors import ModelNotFound
from onnxg.hub.download import PullRef, RemoteFile, default_name, parse_ref, select_files

SUB = "cpu_and_mobile/cpu-int4"
BIG = "model.onnx.data"


def onnxg(home: Path, *args: str, hub: FakeHub | None = None, endpoint: str | None = None,
          offline: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnxg.cli.main", *args], env=_env(home, hub, endpoint, offline),
                          capture_output=True, text=True, timeout=timeout)


def _env(home: Path, hub: FakeHub | None, endpoint: str | None = None, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ONNXG_DEBUG"))}
    env.update({
        "ONNXG_HOME": str(home),
        "HF_HOME": str(home / "hf"),  # no token or cache of the machine's user
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "COLUMNS": "120",
    })
    if hub is not None or endpoint:
        env["HF_ENDPOINT"] = endpoint or hub.url  # type: ignore[union-attr]
    return env


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture
def repo_files() -> dict[str, bytes]:
    """A repo shaped like microsoft/Phi-3.5-mini-instruct-onnx: a README and license at the
    root, the model in a subfolder, with a data file large enough to be killed halfway."""
    rng = random.Random(7)
    return {
        "README.md": b"# tiny\n",
        "LICENSE": b"MIT\n",
        ".gitattributes": b"*.onnx filter=lfs\n",
        f"{SUB}/model.onnx": b"\x08\x08" + rng.randbytes(20_000),
        f"{SUB}/{BIG}": rng.randbytes(6 << 20),
        f"{SUB}/genai_config.json": json.dumps({"model": {"type": "llama"}}).encode(),
        f"{SUB}/tokenizer.json": b'{"version": "1.0"}',
        f"{SUB}/tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        f"{SUB}/pytorch_model.bin": b"not wanted",
        "cpu_and_mobile/other-fp32/model.onnx": b"other",
    }


# --- the CLI against the fake hub ---------------------------------------------------------------


def test_full_download_only_model_files(hub, repo_files, onnxg_home):
    hub.add_repo("org/tiny-onnx", repo_files)
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub)
    assert r.returncode == 0, r.stderr
    folder = onnxg_home / "models" / "tiny-onnx-cpu-int4"
    assert str(folder) in r.stdout
    got = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert got == {"model.onnx", BIG, "genai_config.json", "tokenizer.json", "tokenizer_config.json", "onnxg.json"}
    for name in got - {"onnxg.json"}:
        assert (folder / name).read_bytes() == repo_files[f"{SUB}/{name}"]
    manifest = json.loads((folder / "onnxg.json").read_text())
    src = manifest["source"]
    assert (src["kind"], src["repo"], src["subfolder"]) == ("hub", "org/tiny-onnx", SUB)
    assert src["revision"] == hub.repos["org/tiny-onnx"].sha
    files = {f["path"]: f for f in manifest["files"]}
    assert files[BIG] == {"path": BIG, "size": 6 << 20, "sha256": sha256(repo_files[f"{SUB}/{BIG}"])}
    assert set(files) == got - {"onnxg.json"}
    assert (manifest["kind"], manifest["precision"], manifest["ep"]) == ("chat", "int4", "cpu")
    # Only the listing and the wanted files were fetched (LFS files through the CDN redirect).
    fetched = {p for m, p, _ in hub.requests if "/resolve/" in p}
    assert not any(p.endswith(("README.md", "LICENSE", ".bin")) for p in fetched)
    assert any(p.startswith("/cdn/") for m, p, _ in hub.requests)
    assert "total" in r.stderr and "MB/s" in r.stderr  # the rich progress display


def test_killed_halfway_resumes_with_a_range_request(hub, repo_files, onnxg_home):
    hub.add_repo("org/tiny-onnx", repo_files)
    half = 3 << 20
    hub.stall(f"{SUB}/{BIG}", after=half)
    proc = subprocess.Popen([sys.executable, "-m", "onnxg.cli.main", "pull", f"org/tiny-onnx/{SUB}", "--no-check"],
                            env=_env(onnxg_home, hub), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hub.stalled.wait(60), "the download never reached the stall point"
        folder = onnxg_home / "models" / "tiny-onnx-cpu-int4"
        part = next((folder / ".pull").glob("*.incomplete"))
        deadline = time.monotonic() + 20
        while part.stat().st_size < half and time.monotonic() < deadline:
            time.sleep(0.05)
        assert part.stat().st_size == half  # everything received is on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    hub.release()
    assert not (folder / BIG).exists() and not (folder / "onnxg.json").exists()
    # The store knows the pull did not finish, and says how to resume.
    listing = json.loads(onnxg(onnxg_home, "models", "--json").stdout)
    assert listing[0]["name"] == folder.name and listing[0]["complete"] is False
    with pytest.raises(ModelNotFound, match="did not finish") as info:
        store.resolve(folder.name)
    assert f"onnxg pull org/tiny-onnx/{SUB}" in (info.value.hint or "")

    sent_before = hub.sent[f"{SUB}/{BIG}"]
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout
    ranges = [rng for m, p, rng in hub.requests if rng]
    assert ranges and all(rng == f"bytes={half}-" for rng in ranges)
    assert hub.sent[f"{SUB}/{BIG}"] - sent_before == (6 << 20) - half  # only the rest was sent
    assert (folder / BIG).read_bytes() == repo_files[f"{SUB}/{BIG}"]
    assert not (folder / ".pull").exists()


def test_existing_files_are_skipped(hub, repo_files, onnxg_home):
    hub.add_repo("org/tiny-onnx", repo_files)
    assert onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub).returncode == 0
    folder = onnxg_home / "models" / "tiny-onnx-cpu-int4"
    (folder / "tokenizer.json").unlink()  # one file lost: only it comes again
    hub.requests.clear()
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", "--json", hub=hub)
    assert r.returncode == 0, r.stderr
    fetched = [p for m, p, _ in hub.requests if "/resolve/" in p or p.startswith("/cdn/")]
    assert fetched == [f"/org/tiny-onnx/resolve/{hub.repos['org/tiny-onnx'].sha}/{SUB}/tokenizer.json"]
    assert "4 of 5 files already present" in r.stderr
    result = json.loads(r.stdout)
    assert result["downloaded"] == ["tokenizer.json"] and len(result["skipped"]) == 4
    assert result["name"] == folder.name and result["revision"] == hub.repos["org/tiny-onnx"].sha
    # A present file of the right size whose content is not the hub's is replaced.
    (folder / "model.onnx").write_bytes(b"\x00" * len(repo_files[f"{SUB}/model.onnx"]))
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub)
    assert r.returncode == 0, r.stderr
    assert (folder / "model.onnx").read_bytes() == repo_files[f"{SUB}/model.onnx"]


def test_missing_repo_is_a_one_line_error(hub, onnxg_home):
    r = onnxg(onnxg_home, "pull", "org/does-not-exist", hub=hub)
    assert r.returncode == 1
    assert "Error: no model repo 'org/does-not-exist' on the hub" in r.stderr
    assert "Hint:" in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 2
    assert not (onnxg_home / "models" / "does-not-exist").exists()


@pytest.fixture
def live(hub, monkeypatch):
    """In-process pulls against the fake hub (conftest makes the test session offline)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub


def test_other_hub_errors_have_hints(live, repo_files):
    from onnxg.hub import download, pull as p

    live.add_repo("org/tiny-onnx", repo_files)
    live.add_repo("org/gated-onnx", repo_files, gated=True)
    live.add_repo("org/weights-only", {"model.safetensors": b"x", "config.json": b"{}"})
    huge = live.add_repo("org/huge-onnx", {"model.onnx": b"x", "model.onnx.data": b"y"})
    huge.fake_sizes["model.onnx.data"] = 1 << 60

    with pytest.raises(download.NoOnnxFiles, match="no ONNX model files in org/tiny-onnx$") as info:
        p.pull("org/tiny-onnx")  # the ONNX files are in subfolders: the hint names them
    assert info.value.hint == f"pick a subfolder: org/tiny-onnx/{SUB}, org/tiny-onnx/cpu_and_mobile/other-fp32"
    with pytest.raises(download.NoOnnxFiles) as info:
        p.pull("org/weights-only")
    assert "onnxg convert org/weights-only" in (info.value.hint or "")
    with pytest.raises(download.NoOnnxFiles) as info:
        p.pull(f"org/tiny-onnx/{SUB}", include=["nothing*.onnx"])
    assert "--include" in (info.value.hint or "")
    with pytest.raises(download.AuthRequired, match="is gated") as info:
        p.pull(f"org/gated-onnx/{SUB}")
    assert "HF_TOKEN" in (info.value.hint or "") and "resume" in (info.value.hint or "")
    with pytest.raises(download.DiskFull, match="GB are free") as info:
        p.pull("org/huge-onnx")
    assert "ONNXG_HOME" in (info.value.hint or "")
    with pytest.raises(download.RepoNotFound, match="no revision 'v9'"):
        p.pull(f"org/tiny-onnx/{SUB}@v9")
    assert not any(p_.startswith("/cdn/") for _, p_, _ in live.requests)  # nothing was downloaded


def test_offline_uses_the_model_in_the_store(hub, repo_files, onnxg_home, free_port, monkeypatch):
    hub.add_repo("org/tiny-onnx", repo_files)
    assert onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub).returncode == 0
    hub.requests.clear()
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", hub=hub, offline=True)
    assert r.returncode == 0, r.stderr
    assert "offline" in r.stderr and "using the copy already in the store" in r.stderr
    assert hub.requests == []
    # The hub unreachable (nothing listens on that port): same, and it says why.
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", endpoint=f"http://127.0.0.1:{free_port}")
    assert r.returncode == 0, r.stderr
    assert "cannot reach the hub" in r.stderr
    # A model that is not there cannot be used offline: an error with the way out.
    from onnxg.hub import download, pull as p

    with pytest.raises(download.HubUnreachable, match="offline mode is on") as info:
        p.pull("org/other-onnx")  # this test session is offline (conftest)
    assert "HF_HUB_OFFLINE" in (info.value.hint or "")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(download.HubUnreachable, match="cannot reach the hub"):
        p.pull("org/other-onnx")


# --- pure functions ----------------------------------------------------------------------------


def test_parse_ref_forms():
    phi, sub = "microsoft/Phi-3.5-mini-instruct-onnx", "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4"
    assert parse_ref(f"{phi}/{sub}") == PullRef(phi, sub, None)
    assert parse_ref("org/m@v1.0") == PullRef("org/m", "", "v1.0")
    assert parse_ref("org/m/sub/dir@abc123") == PullRef("org/m", "sub/dir", "abc123")
    url = "https://huggingface.co/microsoft/Phi-3.5-mini-instruct-onnx/tree/main/cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4"
    assert parse_ref(url) == PullRef("microsoft/Phi-3.5-mini-instruct-onnx",
                                     "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4", "main")
    assert default_name(parse_ref(url)) == "phi-3.5-mini-instruct-onnx-cpu-int4-awq-block-128-acc-level-4"
    for bad in ("", "../etc", "org/m/../x", "org/m@"):
        with pytest.raises(ModelNotFound):
            parse_ref(bad)


def test_select_files_for_a_root_tokenizer_layout():
    """Repos that keep several graphs in onnx/ and the tokenizer at the root."""
    names = ["config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json", "README.md",
             "onnx/model.onnx", "onnx/model_fp16.onnx", "onnx/model_quantized.onnx", "model.safetensors"]
    siblings = [RemoteFile(n, n, 10) for n in names]
    picked = select_files(siblings, PullRef("org/m", "onnx"), ["model.onnx"])
    assert {f.name: f.path for f in picked} == {
        "model.onnx": "onnx/model.onnx", "config.json": "config.json", "tokenizer.json": "tokenizer.json",
        "modules.json": "modules.json", "1_Pooling/config.json": "1_Pooling/config.json"}
    assert len(select_files(siblings, PullRef("org/m", "onnx"))) == 7
    assert select_files(siblings, PullRef("org/m", "")) == []


def test_progress_events_in_process(hub, repo_files, monkeypatch):
    """The events a host program gets (onnxg.Server's download callbacks use them)."""
    from huggingface_hub import constants

    from onnxg.hub.pull import PullProgress, pull

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.add_repo("org/tiny-onnx", repo_files)

    class Recorder(PullProgress):
        def __init__(self) -> None:
            self.events: list[tuple] = []
            self.bytes: dict[str, int] = {}

        def resolved(self, repo, revision, name):
            self.events.append(("resolved", repo, name))

        def plan(self, files, present):
            self.events.append(("plan", len(files), sum(present.values())))

        def start(self, file, offset):
            self.events.append(("start", file.name, offset))

        def advance(self, file, nbytes):
            self.bytes[file.name] = self.bytes.get(file.name, 0) + nbytes

        def finish(self, file):
            self.events.append(("finish", file.name))

        def step(self, text):
            self.events.append(("step", text))

    rec = Recorder()
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    result = pull(f"org/tiny-onnx/{SUB}", progress=rec)
    assert constants.DOWNLOAD_CHUNK_SIZE == chunk  # huggingface_hub's global is put back
    assert rec.events[0] == ("resolved", "org/tiny-onnx", "tiny-onnx-cpu-int4")
    assert rec.events[1] == ("plan", 5, 0)
    starts = [e[1] for e in rec.events if e[0] == "start"]
    assert starts == [e[1] for e in rec.events if e[0] == "finish"] == result.downloaded
    assert rec.bytes == {name: len(repo_files[f"{SUB}/{name}"]) for name in result.downloaded}
    assert rec.events[-1][0] == "step"
    # A second pull of the same model: nothing to download, the plan says all is present.
    rec2 = Recorder()
    again = pull(f"org/tiny-onnx/{SUB}", progress=rec2)
    assert again.downloaded == [] and len(again.skipped) == 5
    assert rec2.events[1] == ("plan", 5, sum(len(repo_files[f"{SUB}/{n}"]) for n in again.skipped))


def test_never_pulls_into_another_models_folder(hub, repo_files, onnxg_home):
    hub.add_repo("org/tiny-onnx", repo_files)
    other = onnxg_home / "models" / "mine"
    other.mkdir(parents=True)
    (other / "model.onnx").write_bytes(b"my own model")
    store.write_manifest(other, {"source": {"kind": "gguf", "path": "/x.gguf"}, "kind": "chat"})
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--name", "mine", "--no-check", hub=hub)
    assert r.returncode == 1 and "already has a different model named 'mine'" in r.stderr
    assert (other / "model.onnx").read_bytes() == b"my own model"
    # --name picks the folder; a later pull of the same repo finds it again by its source.
    assert onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--name", "phi", "--no-check", hub=hub).returncode == 0
    r = onnxg(onnxg_home, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub)
    assert r.returncode == 0 and "phi (0 files downloaded, 5 already present)" in r.stdout


def test_a_pulled_model_passes_check_and_generates(hub, tiny_chat_model, onnxg_home):
    """A real (tiny, random-weight) onnxruntime-genai model served by the fake hub."""
    hub.add_repo("org/tiny-chat-onnx", tiny_chat_model, prefix=f"{SUB}/")
    hub.repos["org/tiny-chat-onnx"].files["README.md"] = b"# card\n"
    from onnxg.convert.check import check

    verdict = check(tiny_chat_model).ok  # what the checker says of the model itself
    r = onnxg(onnxg_home, "pull", f"org/tiny-chat-onnx/{SUB}", hub=hub, timeout=300)
    if verdict:
        assert r.returncode == 0 and "onnxg check passed" in r.stdout, r.stderr
    else:  # the pull still lands the files, and says the check fails
        assert r.returncode == 1 and "was downloaded but `onnxg check` fails" in r.stderr
    folder = onnxg_home / "models" / "tiny-chat-onnx-cpu-int4"
    for path in tiny_chat_model.rglob("*"):
        rel = path.relative_to(tiny_chat_model)
        if path.is_file() and not rel.parts[0].startswith(".") and rel.as_posix() != "onnxg.json":
            assert (folder / rel).read_bytes() == path.read_bytes(), rel
    listed = json.loads(onnxg(onnxg_home, "models", "--json").stdout)
    assert [(m["name"], m["kind"], m["check"]) for m in listed] == [(folder.name, "chat", verdict)]

    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=24)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode("Hello"))
    for _ in range(4):
        generator.generate_next_token()
    assert len(generator.get_sequence(0)) > len(tokenizer.encode("Hello"))


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (needs root, as on CI and the dev machines; skipped elsewhere)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_disk_full_before_and_during_the_download(hub, repo_files, small_disk):
    hub.add_repo("org/tiny-onnx", repo_files)
    big = dict(repo_files)
    big[f"{SUB}/{BIG}"] = random.Random(1).randbytes(10 << 20)
    hub.add_repo("org/big-onnx", big)
    home_dir = small_disk / "home"
    # Not enough room for the files at all: said before anything is downloaded.
    r = onnxg(home_dir, "pull", f"org/big-onnx/{SUB}", "--no-check", hub=hub)
    assert r.returncode == 1 and "GB are free" in r.stderr
    assert not any(p.startswith("/cdn/") for _, p, _ in hub.requests)
    # Room at the start, filled by someone else halfway: one line, and the pull resumes later.
    hub.stall(f"{SUB}/{BIG}", after=3 << 20)
    proc = subprocess.Popen([sys.executable, "-m", "onnxg.cli.main", "pull", f"org/tiny-onnx/{SUB}", "--no-check"],
                            env=_env(home_dir, hub), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert hub.stalled.wait(60)
    part = next((home_dir / "models" / "tiny-onnx-cpu-int4" / ".pull").glob("*.incomplete"))
    deadline = time.monotonic() + 20
    while part.stat().st_size < 3 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    hub.release()
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 1, errs
    assert "the disk filled up while downloading model.onnx.data" in errs and "resume" in errs
    assert "Traceback" not in errs
    filler.unlink()
    r = onnxg(home_dir, "pull", f"org/tiny-onnx/{SUB}", "--no-check", hub=hub)
    assert r.returncode == 0, r.stderr
    assert (home_dir / "models" / "tiny-onnx-cpu-int4" / BIG).read_bytes() == repo_files[f"{SUB}/{BIG}"]
