"""The credential guard, through the real magic: a secret in any shape pickle would carry is held back
with a sentence that says where it is (never what it is) and how to send it on purpose, and no summary
shows one. Each shape here travelled silently when the guard looked only at top-level strings."""

from __future__ import annotations

import pytest
import torch

from modal_magic.notebook.view.came_back import describe_returned

from .conftest import published_displays, run

HF = "hf_" + "Q" * 30
OPENAI = "sk-" + "a" * 30
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def assert_held_back(shell, capsys, cell: str, expected: list[str], value: str) -> None:
    """The cell is refused before anything runs: the sentence names the place, not the value; nothing changed."""
    run(shell, "state = 'before'")
    result = run(shell, f"%%modal_gpu --backend local\nstate = 'after'\n{cell}")
    assert not result.success
    err = capsys.readouterr().err
    for words in expected:
        assert words in err, err
    assert "nothing was sent and the cell did not run" in err
    assert value not in err and value[:8] not in err
    assert shell.user_ns["state"] == "before"


@pytest.mark.parametrize("setup, cell, expected, value", [
    pytest.param(f"cfg = {{'model': 'bert', 'hf': {HF!r}}}", "n = len(cfg)",
                 ["held back 'cfg', which holds a value that looks like a Hugging Face token at cfg['hf']",
                  "--in cfg"], HF, id="dict"),
    pytest.param(f"lookup = {{{OPENAI!r}: {{'user': 'ada'}}}}", "n = len(lookup)",
                 ["held back 'lookup'", "looks like an OpenAI/Anthropic-style API key at a key of lookup"], OPENAI,
                 id="dict key"),
    pytest.param(f"keys = ['public', ({OPENAI!r},)]", "n = len(keys)",
                 ["held back 'keys'", "an OpenAI/Anthropic-style API key at keys[1][0]", "--in keys"], OPENAI,
                 id="list"),
    pytest.param("class Client:\n    def __init__(self, key):\n        self.api_key = key\n"
                 "client = Client('plain-value-1234')", "n = 1 if client else 0",
                 ["held back 'client'", "a name that suggests a credential at client.api_key", "--in client"],
                 "plain-value-1234", id="attribute"),
    pytest.param("from dataclasses import dataclass\n@dataclass(slots=True)\nclass Creds:\n    user: str\n"
                 "    password: str\ncreds = Creds('ada', 'plain-value-1234')", "n = len(creds.user)",
                 ["held back 'creds'", "a name that suggests a credential at creds.password"], "plain-value-1234",
                 id="slot"),
    pytest.param(f"def complete(prompt, key={OPENAI!r}):\n    return prompt", "n = len(complete('hi'))",
                 ["held back 'complete'", "looks like an OpenAI/Anthropic-style API key at complete(key=…)",
                  "--in complete"], OPENAI, id="default"),
    pytest.param("password = b'\\xffhunter2'", "n = len(password)",
                 ["held back 'password'", "a name that suggests a credential", "--in password"], "hunter2",
                 id="non-ascii bytes"),
    pytest.param(f"aws_key = {AWS_SECRET!r}", "n = len(aws_key)",
                 ["held back 'aws_key'", "a name that suggests a credential", "--in aws_key"], AWS_SECRET,
                 id="aws secret"),
    pytest.param(f"OPENAI_API_KEY = {OPENAI!r}\ndef ask():\n    return OPENAI_API_KEY", "n = len(ask())",
                 ["held back 'ask'", "at OPENAI_API_KEY (a global that ask reads)", "--in ask"], OPENAI,
                 id="function global"),
    pytest.param(f"OPENAI_API_KEY = {OPENAI!r}\ndef ask():\n    return (lambda: [OPENAI_API_KEY for _ in 'x'])()",
                 "n = len(ask())", ["held back 'ask'", "at OPENAI_API_KEY (a global that ask reads)"], OPENAI,
                 id="global of nested code"),
    pytest.param(f"def outer():\n    secret = {HF!r}\n    return lambda: secret\nfetch = outer()", "n = len(fetch())",
                 ["held back 'fetch'", "at secret (closed over by fetch)"], HF, id="closure"),
    pytest.param("hf_token = 'plain-value-1234'\nsettings = {'headers': {'x': hf_token}}", "n = len(settings)",
                 ["held back 'settings'", "the value of 'hf_token' (a name that suggests a credential) at "
                  "settings['headers']['x']"], "plain-value-1234", id="copy of a named secret"),
])
def test_a_secret_in_any_shape_is_held_back(shell, capsys, setup: str, cell: str, expected: list[str],
                                           value: str) -> None:
    run(shell, setup)
    assert_held_back(shell, capsys, cell, expected, value)


def test_naming_the_variable_sends_it_on_purpose(shell) -> None:
    run(shell, f"cfg = {{'hf': {HF!r}}}\nOPENAI_API_KEY = {OPENAI!r}\ndef ask():\n    return OPENAI_API_KEY")
    assert run(shell, "%%modal_gpu --backend local --in cfg\nn = len(cfg['hf'])").success
    assert shell.user_ns["n"] == len(HF)
    assert run(shell, "%%modal_gpu --backend local --in ask\nn = len(ask())").success
    assert shell.user_ns["n"] == len(OPENAI)
    # Naming the global the function reads sends it too: the function goes with it.
    assert run(shell, "%%modal_gpu --backend local --in OPENAI_API_KEY\nn = len(ask()) + 1").success
    assert shell.user_ns["n"] == len(OPENAI) + 1


def test_map_elements_are_held_back_unless_named(shell, capsys) -> None:
    run(shell, "api_token = 'hunter2-secret'")
    run(shell, "state = 'before'")
    result = run(shell, "%%modal_gpu --backend local --map tok=[api_token]\nstate = 'after'\nn = len(tok)")
    assert not result.success
    err = capsys.readouterr().err
    assert "held back element [0] of --map tok=[api_token], which holds the value of 'api_token'" in err, err
    assert "nothing was sent and the cell did not run" in err and "--in tok" in err
    assert "hunter2" not in err
    assert shell.user_ns["state"] == "before" and "n" not in shell.user_ns
    # A pattern gives an element away whatever the expression.
    result = run(shell, f"%%modal_gpu --backend local --map tok=['x', {OPENAI!r}]\nn = len(tok)")
    assert not result.success
    err = capsys.readouterr().err
    assert "element [1] of --map tok=" in err and "looks like an OpenAI/Anthropic-style API key" in err
    # Naming the elements, or the variable they come from, sends them.
    assert run(shell, "%%modal_gpu --backend local --map tok=[api_token] --in tok\nn = len(tok)").success
    assert shell.user_ns["n"] == [len("hunter2-secret")]
    assert run(shell, "%%modal_gpu --backend local --map tok=[api_token] --in api_token\nm = len(tok)").success
    assert shell.user_ns["m"] == [len("hunter2-secret")]


def test_an_ordinary_nested_config_still_runs(shell) -> None:
    run(shell, "class Trainer:\n    def __init__(self):\n        self.name, self.steps = 'run-7', 100\n"
               "def schedule(step, warmup=10, kind='cosine'):\n    return min(1, step / warmup)\n"
               "config = {'model': {'name': 'bert-base-uncased', 'layers': [12, 768], 'pad_token': '[PAD]',\n"
               "                    'eos_token': '</s>', 'tokenizer': 'bert-base-uncased'},\n"
               "          'optim': ('adam', {'lr': 1e-3}), 'tags': {'nlp', 'baseline'}, 'author': 'Ada',\n"
               "          'max_tokens': 512, 'num_tokens': 1024}\n"
               "tokens = ['hello', 'world']\ntrainer = Trainer()")
    assert run(shell, "%%modal_gpu --backend local\n"
                      "n = len(config) + len(tokens) + trainer.steps + schedule(5) * 2").success
    assert shell.user_ns["n"] == 6 + 2 + 100 + 1
    assert run(shell, "%%modal_gpu --backend local --map c=[config, config]\nname = c['model']['name']").success
    assert shell.user_ns["name"] == ["bert-base-uncased"] * 2


def test_the_summary_never_shows_a_secret_made_in_the_cell(shell, capsys) -> None:
    with published_displays(shell) as published:
        assert run(shell, f"%%modal_gpu --backend local\ndb_password = 'hunter2-secret'\nkey = {OPENAI!r}\n"
                          "count = 3").success
    assert shell.user_ns["db_password"] == "hunter2-secret"   # it came back; only the summary hides it
    shown = capsys.readouterr().out + repr(published)
    assert "hunter2" not in shown and OPENAI[:8] not in shown
    assert "db_password = '…' (hidden: looks like a credential)" in shown and "count = 3" in shown


def test_the_summary_hides_secret_named_and_secret_looking_strings() -> None:
    text = describe_returned({"db_password": "hunter2", "note": HF, "pad_token": "<pad>", "n": 3}).text()
    assert "hunter2" not in text and HF not in text
    assert "pad_token = '<pad>'" in text and "n = 3" in text


def _looked_at(value: object) -> int:
    """How many objects the guard's walk of ``value`` looks at (what it costs, counted rather than timed)."""
    from modal_magic.notebook.secrets import BUDGET, Guard, _Walk

    walk = _Walk(Guard({"value": value}))
    assert walk.visit(value, "value", "value", 0) is None
    return BUDGET - walk.left


def test_the_guard_walk_is_bounded_and_never_reads_a_tensor() -> None:
    from modal_magic.notebook.secrets import BUDGET

    assert _looked_at([f"word {i}" for i in range(1_000_000)]) == BUDGET  # stops at its budget, not at 1M
    assert _looked_at(torch.zeros(25_000_000)) < 10                    # 100 MB: its contents are no parts


def test_a_users_module_function_that_reads_a_secret_is_held_back(shell, capsys, tmp_path, monkeypatch) -> None:
    """The user's own modules travel by value (their code and the globals it reads), so the guard looks there too."""
    (tmp_path / "mm_secret_helpers.py").write_text(f"SERVICE_KEY = {OPENAI!r}\n\ndef ask():\n    return SERVICE_KEY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run(shell, "from mm_secret_helpers import ask")
    assert_held_back(shell, capsys, "n = len(ask())",
                     ["held back 'ask'", "at SERVICE_KEY (a global that ask reads)", "--in ask"], OPENAI)
