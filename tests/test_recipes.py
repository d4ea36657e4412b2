"""Recipes: every shipped recipe loads and is consistent; bad files fail with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxg.convert import recipes
from onnxg.convert.recipes import RecipeError

ORIGINAL_CHAT = 23
NOT_COMPATIBLE = {
    "ministral-3-3b-instruct-2512", "gemma-3-1b-it", "h2o-danube3-4b-chat", "h2o-danube3.1-4b-chat",
    "croissantllmchat-v0.1", "exaone-3.5-2.4b-instruct", "internlm2_5-1_8b-chat",
}
EMBEDDINGS = {"all-minilm-l6-v2", "gte-qwen2-1.5b-instruct", "universal-sentence-encoder-large"}
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def test_every_recipe_loads() -> None:
    loaded = recipes.load_all()
    names = [r.name for r in loaded]
    assert len(names) == len(set(names))
    files = sorted(p.stem for p in recipes.recipes_dir().glob("*.toml"))
    assert sorted(names) == files
    chat = [r for r in loaded if r.task == "chat"]
    assert len(chat) == ORIGINAL_CHAT + len(NOT_COMPATIBLE)
    assert NOT_COMPATIBLE <= set(names)
    assert EMBEDDINGS <= set(names)
    assert {r.name for r in loaded if r.task != "chat"} == EMBEDDINGS


@pytest.mark.parametrize("recipe", recipes.load_all(), ids=lambda r: r.name)
def test_recipe_is_consistent(recipe: recipes.Recipe) -> None:
    assert recipe.title and recipe.notes
    assert recipe.path is not None and recipe.path.name == f"{recipe.name}.toml"
    assert recipe.ok == (recipe.reason is None)
    if recipe.task == "chat":
        assert recipe.source_is_hub, recipe.source
        assert recipe.pooling is None
        assert recipe.context_length and recipe.context_length >= 2048
    if recipe.task == "embedding":
        assert recipe.pooling in ("mean", "last", "cls")
    if recipe.name not in NOT_COMPATIBLE:
        assert recipe.ok, recipe.reason
    assert recipes.get(recipe.name) == recipe
    assert recipes.get(recipe.name.upper()) == recipe
    data = recipe.to_json()
    assert data["name"] == recipe.name and "path" not in data


@pytest.mark.parametrize("recipe", [r for r in recipes.load_all() if r.chat_template], ids=lambda r: r.name)
def test_template_fixes_render(recipe: recipes.Recipe) -> None:
    """A recipe's chat-template fix renders a conversation with a system message, turn by turn."""
    from onnxg.runtime.template import render as runtime_render

    def render(messages: list[dict[str, str]]) -> str:
        return runtime_render(recipe.chat_template or "", messages, bos_token="<s>", eos_token="</s>")

    text = render(CONVERSATION)
    for message in CONVERSATION:
        assert message["content"] in text
    # Order is kept, and a generation prompt ends the text.
    positions = [text.index(m["content"]) for m in CONVERSATION]
    assert positions == sorted(positions)
    assert render(CONVERSATION[1:2]).rstrip() != CONVERSATION[1]["content"]


def test_gemma_fix_folds_the_system_message() -> None:
    from onnxg.runtime.template import render

    recipe = recipes.get("gemma-2-2b-it")
    assert recipe is not None and recipe.chat_template
    text = render(recipe.chat_template, CONVERSATION, bos_token="<bos>", eos_token="<eos>")
    assert text == (
        "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis.<end_of_turn>\n<start_of_turn>user\nAnd of Italy?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_get_unknown_is_none() -> None:
    assert recipes.get("no-such-model") is None


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = 'title = "T"\nsource = "org/model"\ntask = "chat"\n'


def test_minimal_recipe_gets_defaults(tmp_path: Path) -> None:
    recipe = recipes.load_file(_write(tmp_path, "tiny", GOOD))
    assert (recipe.precision, recipe.ep, recipe.status, recipe.builder_options) == ("int4", "cpu", "ok", {})
    embed = recipes.load_file(_write(tmp_path, "emb", GOOD.replace('"chat"', '"embed"')))
    assert embed.precision == "fp32"


def test_builder_options_become_strings(tmp_path: Path) -> None:
    recipe = recipes.load_file(_write(tmp_path, "opts", GOOD + "[builder_options]\nint4_block_size = 64\nint4_is_symmetric = true\n"))
    assert recipe.builder_options == {"int4_block_size": "64", "int4_is_symmetric": "true"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + 'colour = "red"\n', "unknown key(s) colour"),
        ('title = "T"\ntask = "chat"\n', "missing required key 'source'"),
        (GOOD + "context_length = \"4096\"\n", "context_length must be an integer, not str"),
        (GOOD + "context_length = true\n", "context_length must be an integer, not bool"),
        (GOOD + "context_length = -1\n", "context_length must be positive"),
        (GOOD.replace('"chat"', '"vision"'), "task = 'vision' is not one of chat, embedding, embed, e2e"),
        (GOOD + 'precision = "int3"\n', "precision = 'int3' is not one of"),
        (GOOD + 'ep = "tpu"\n', "ep = 'tpu' is not one of"),
        (GOOD + 'status = "incompatible"\n', 'status = "incompatible" needs a reason'),
        (GOOD + 'reason = "why"\n', "reason is only for"),
        (GOOD + 'pooling = "mean"\n', "pooling applies to embedding models only"),
        (GOOD.replace('"chat"', '"embed"') + 'pooling = "median"\n', "pooling = 'median' is not one of"),
        (GOOD + 'chat_template = "plain text"\n', "chat_template must be a Jinja template"),
        (GOOD + "trust_remote_code = 1\n", "trust_remote_code must be true or false, not int"),
        (GOOD + 'name = "other"\n', "differs from the file name"),
        (GOOD + 'prebuilt = "not a repo"\n', "is not a Hugging Face repo id"),
        (GOOD + "[builder_options]\nx = [1, 2]\n", "builder_options.x must be a string, number or boolean"),
        (GOOD + "title = \"again\"\n", "not valid TOML"),
    ],
)
def test_invalid_recipes_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "broken", text)
    with pytest.raises(RecipeError) as caught:
        recipes.load_file(path)
    assert "broken.toml" in caught.value.message
    assert message in caught.value.message
    assert caught.value.hint


def test_bad_file_name(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="lowercase"):
        recipes.load_file(_write(tmp_path, "Bad Name", GOOD))


def test_load_dir_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    _write(tmp_path, "a-good", GOOD)
    _write(tmp_path, "b-bad", GOOD + "extra = 1\n")
    with pytest.raises(RecipeError, match="b-bad.toml"):
        recipes.load_dir(tmp_path)


def test_config_overrides(tmp_path: Path) -> None:
    text = GOOD + "[config_overrides]\narchitectures = [\"LlamaForCausalLM\"]\nrope_scaling = { rope_type = \"default\" }\n"
    recipe = recipes.load_file(_write(tmp_path, "over", text))
    assert recipe.config_overrides == {"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "default"}}
    assert recipe.to_json()["config_overrides"] == recipe.config_overrides
    with pytest.raises(RecipeError, match="config_overrides apply to chat models"):
        recipes.load_file(_write(tmp_path, "over2", text.replace('"chat"', '"embed"')))
    with pytest.raises(RecipeError, match="config_overrides must be a table"):
        recipes.load_file(_write(tmp_path, "over3", GOOD + 'config_overrides = "x"\n'))


def test_formerly_incompatible_models_carry_their_fix() -> None:
    """The fixes found with tiny random weights (see each recipe's notes)."""
    exaone = recipes.get("exaone-3.5-2.4b-instruct")
    gemma3 = recipes.get("gemma-3-1b-it")
    internlm = recipes.get("internlm2_5-1_8b-chat")
    assert exaone and exaone.ok and exaone.config_overrides == {"architectures": ["LlamaForCausalLM"]}
    assert gemma3 and gemma3.ok and gemma3.config_overrides["rope_local_base_freq"] == 10000.0
    assert internlm and internlm.ok and internlm.trust_remote_code and "rope_scaling" in internlm.config_overrides
    for name in ("h2o-danube3-4b-chat", "h2o-danube3.1-4b-chat"):
        danube = recipes.get(name)
        assert danube and not danube.ok and danube.reason and "multiple of 16" in danube.reason


def test_incompatible_recipes_say_why() -> None:
    for name in NOT_COMPATIBLE:
        recipe = recipes.get(name)
        assert recipe is not None
        if not recipe.ok:
            assert recipe.reason and len(recipe.reason) > 40
        assert "verified" in recipe.notes.lower() or "tiny" in recipe.notes.lower()
