"""Real tokenizers and chat templates of the tool-calling families, offline and cached.

The llama-cpp-python 0.3.36 source distribution (PyPI) ships real chat templates
(``vendor/llama.cpp/models/templates/*.jinja``) and real vocabularies (``ggml-vocab-*.gguf``);
transformers 5 loads a vocabulary with ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``.
Each family's folder holds the saved tokenizer with its template as ``chat_template.jinja``.

Where a family's real vocabulary is not in the sdist, the nearest one is used and the
family's control tokens are added as special tokens, as the real tokenizer has them:
Mistral Nemo (tekken) -> llama-spm + Mistral's tool tokens; Granite 3.3 -> starcoder +
Granite's role and tool tokens.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from modelkit import cache

SDIST = "llama-cpp-python==0.3.36"
PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
FAMILIES = {
    # name: (template, vocab, special tokens to add)
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "qwen2", []),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama-bpe", []),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "llama-spm",
                     ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                      "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]),
    "phi3.5": ("microsoft-Phi-3.5-mini-instruct.jinja", "phi-3", []),
    "granite3.3": ("ibm-granite-granite-3.3-2B-Instruct.jinja", "starcoder",
                   ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|tool_call|>"]),
}


def _sdist(folder: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", SDIST,
                    "-d", str(folder)], check=True, capture_output=True, timeout=900)
    [archive] = folder.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name
            if name.startswith(PREFIX + "templates/") and name.endswith(".jinja") or (
                    name.startswith(PREFIX + "ggml-vocab-") and name.endswith(".gguf")):
                member.name = Path(name).name
                tar.extract(member, folder / ("templates" if name.endswith(".jinja") else "vocab"))
    archive.unlink()


def assets() -> Path:
    """The templates and vocabularies of the sdist (downloaded once: 76 MB)."""
    return cache.cached("lcpp-assets", {"sdist": SDIST}, _sdist)


def family_tokenizer(family: str) -> Path:
    """A folder with ``family``'s tokenizer files and its chat template."""
    template, vocab, extra = FAMILIES[family]

    def build(folder: Path) -> None:
        from transformers import AutoTokenizer

        source = assets()
        tokenizer = AutoTokenizer.from_pretrained(str(source / "vocab"), gguf_file=f"ggml-vocab-{vocab}.gguf")
        if extra:
            tokenizer.add_special_tokens({"additional_special_tokens": extra})
        tokenizer.chat_template = (source / "templates" / template).read_text(encoding="utf-8")
        tokenizer.save_pretrained(str(folder))

    return cache.cached(f"tool-family-{family}", {"template": template, "vocab": vocab, "extra": extra}, build)
