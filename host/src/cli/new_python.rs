//! `optech new NAME --lang python`: the files of a Python plugin folder, a
//! handler and its pytest tests, building with no edits.

/// `(file name, text)` of each file the folder gets.
pub fn files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", app(name)),
        ("test_app.py", tests(name)),
        ("requirements.txt", REQUIREMENTS.to_string()),
        (".gitignore", "__pycache__/\n.pytest_cache/\n".to_string()),
    ]
}

fn app(name: &str) -> String {
    format!(
        r#""""The `{name}` plugin: answers OpTech data requests for the keys mapped to it
in optech.toml. `optech build` turns this folder into plugins/{name}.wasm."""

from optech_sdk import config, handler


@handler
def handle(req):
    # A missing input is the caller's mistake: answered 400 invalid_input.
    name = req.inputs.require("name")
    # From `[plugins.{name}.config]` in optech.toml.
    greeting = config("greeting") or "hello"
    # State that outlives a request goes in a bucket that `stores` grants in
    # `[plugins.{name}]` of optech.toml (`from optech_sdk import store`):
    #   visits = store.open("visits").increment(name)
    return {{"message": f"{{greeting}}, {{name}}!", "key": req.key}}
"#
    )
}

fn tests(name: &str) -> String {
    format!(
        r#""""Unit tests of the handler, in plain CPython: `pytest` in this folder (after
`pip install optech-sdk pytest`)."""

import pytest
from optech_sdk import InvalidInput, testing

from app import handle

# The store is in memory here: testing.store.reset() and
# testing.store.grant("visits") set it up for a test.


def test_greets_by_name():
    data = testing.call(handle, {{"name": "Ada"}}, key="{name}")
    assert data == {{"message": "hello, Ada!", "key": "{name}"}}


def test_the_greeting_comes_from_the_config():
    data = testing.call(handle, {{"name": "Ada"}}, config={{"greeting": "bonjour"}})
    assert data["message"] == "bonjour, Ada!"


def test_a_missing_name_is_the_callers_mistake():
    with pytest.raises(InvalidInput, match="name"):
        testing.call(handle, {{}})
"#
    )
}

const REQUIREMENTS: &str = "\
# Pure-Python packages app.py imports, one per line as pip reads them; `optech
# build` installs them into the component. optech-sdk comes with optech.
";
