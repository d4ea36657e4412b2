"""Peak memory and wall time of an int4 chat conversion: layer by layer vs the builder's plain path.

Builds random-weight Llama folders (bfloat16 safetensors, real SmolLM2 tokenizer, written
shard by shard: see tests/modelkit/sized.py) of ~0.5B, ~1.2B and ~3B parameters, then runs
onnxg's genai backend on each, one conversion per fresh process under ``/usr/bin/time -v``
(its "Maximum resident set size" covers the builder worker, a child of that process), with
a hard RLIMIT_DATA so a mistake cannot take the machine down. The plain path runs only up
to ``--plain-up-to`` (it needs ~7 GB per billion parameters); beyond, it is extrapolated
from the two smaller sizes and printed as such.

    PYTHONPATH=... python benchmarks/convert_memory.py --sizes 0.5B 1.2B 3B --work /tmp/convmem
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_sources(sizes: list[str], work: Path) -> dict[str, tuple[Path, int]]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from modelkit.chat import tokenizer_folder
    from modelkit.sized import SIZES, write_llama

    found = {}
    for name in sizes:
        folder = work / f"llama-{name}"
        marker = folder / "params.txt"
        if not marker.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            started = time.monotonic()
            params = write_llama(folder, tokenizer_folder(), SIZES[name])
            marker.write_text(str(params))
            print(f"built {folder} ({params / 1e9:.2f}B params) in {time.monotonic() - started:.0f}s", flush=True)
        found[name] = (folder, int(marker.read_text()))
    return found


def one(source: str, out: str, stream: bool) -> None:
    """The measured child: the genai backend alone (no check), as `onnxg convert` runs it."""
    from onnxg.convert import genai

    work = Path(out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    provenance = genai.convert(Path(source), work, precision="int4", ep="cpu", extra={}, trust_remote_code=False,
                               log=work.parent / f"{work.name}.log", progress=lambda s: None, stream=stream)
    print("BUILD " + json.dumps(provenance.get("build")))


def measure(source: Path, out: Path, stream: bool, limit: int) -> dict:
    command = ["/usr/bin/time", "-v", "prlimit", f"--data={limit}", sys.executable, __file__, "--one",
               str(source), str(out), "--stream" if stream else "--plain"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"conversion failed ({'stream' if stream else 'plain'} {source.name})")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    data = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {"peak_gb": peak_kb * 1024 / 1e9, "wall_s": wall, "output_gb": data / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["0.5B", "1.2B", "3B"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/onnxg-convert-memory"))
    parser.add_argument("--plain-up-to", type=float, default=1.3, help="billions of parameters")
    parser.add_argument("--limit-gb", type=float, default=12.0, help="RLIMIT_DATA of each conversion")
    parser.add_argument("--keep", action="store_true", help="keep the source folders")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sources = build_sources(args.sizes, args.work)
    limit = int(args.limit_gb * 1e9)
    rows = []
    for name, (folder, params) in sources.items():
        row = {"size": name, "params_b": params / 1e9}
        plain = params / 1e9 <= args.plain_up_to
        # alternate the order so a busy neighbour does not always hit the same path
        for stream in ((False, True) if plain else (True,)):
            row["stream" if stream else "plain"] = measure(folder, args.work / f"out-{name}", stream, limit)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep and params > 2e9:
            shutil.rmtree(folder, ignore_errors=True)
    measured = [r for r in rows if "plain" in r]
    if len(measured) >= 2:
        a, b = measured[0], measured[-1]
        slope = (b["plain"]["peak_gb"] - a["plain"]["peak_gb"]) / (b["params_b"] - a["params_b"])
        for row in rows:
            if "plain" not in row:
                row["plain_extrapolated_peak_gb"] = a["plain"]["peak_gb"] + slope * (row["params_b"] - a["params_b"])
    print("\n| model | params | plain peak RSS | plain wall | streamed peak RSS | streamed wall | wall ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["stream"]
        if "plain" in r:
            p = r["plain"]
            cells = f"{p['peak_gb']:.2f} GB | {p['wall_s']:.0f} s"
            ratio = f"{s['wall_s'] / p['wall_s']:.2f}x"
        else:
            cells = f"~{r['plain_extrapolated_peak_gb']:.1f} GB (extrapolated) | -"
            ratio = "-"
        print(f"| Llama {r['size']} | {r['params_b']:.2f}B | {cells} | {s['peak_gb']:.2f} GB | {s['wall_s']:.0f} s "
              f"| {ratio} |")
    streamed = [r for r in rows]
    if len(streamed) >= 2:
        growth = (streamed[-1]["stream"]["peak_gb"] - streamed[0]["stream"]["peak_gb"]) / (
            streamed[-1]["params_b"] - streamed[0]["params_b"])
        print(f"\nstreamed peak grows by {growth:.2f} GB per billion parameters")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3], sys.argv[4] == "--stream")
    else:
        main()
