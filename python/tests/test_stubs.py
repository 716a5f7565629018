"""The type stubs ship in the wheel and say what the extension really takes: every function's
parameters, their kinds and defaults, as `inspect.signature` reads them from the module."""

import ast
import inspect
from pathlib import Path

import pytest
import xner

STUBS = Path(xner.__file__).with_name("__init__.pyi")


def stub_functions() -> dict:
    tree = ast.parse(STUBS.read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


def stub_parameters(node: ast.FunctionDef) -> list:
    args = node.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = [(a.arg, "positional", d) for a, d in zip(positional, defaults)]
    out += [(a.arg, "keyword", d) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return [
        (name, kind, inspect.Parameter.empty if d is None else ast.literal_eval(d))
        for name, kind, d in out
        if name != "self"
    ]


def runtime_parameters(function) -> list:
    kinds = {inspect.Parameter.KEYWORD_ONLY: "keyword"}
    return [
        (p.name, kinds.get(p.kind, "positional"), p.default)
        for p in inspect.signature(function).parameters.values()
        if p.name != "self"
    ]


def test_stubs_and_marker_ship_in_the_package():
    assert STUBS.exists() and STUBS.with_name("py.typed").exists()
    assert set(xner.__all__) <= set(dir(xner))


@pytest.mark.parametrize(
    "name,function",
    [
        ("train", xner.train),
        ("evaluate", xner.evaluate),
        ("read_corpus", xner.read_corpus),
        ("Tagger.__init__", xner.Tagger),
        ("Tagger.tag", xner.Tagger.tag),
    ],
)
def test_stub_signatures_match_the_extension(name, function):
    stubs = stub_functions()
    assert name in stubs, f"{name} has no stub"
    assert stub_parameters(stubs[name]) == runtime_parameters(function)


def test_every_public_function_has_a_docstring():
    for function in [xner.train, xner.evaluate, xner.read_corpus, xner.Tagger, xner.Tagger.tag]:
        assert function.__doc__ and len(function.__doc__) > 40, function
