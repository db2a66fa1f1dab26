"""The examples in the proxy's docstrings run as written (``python -m doctest`` would say the
same): the module docs are what a reader copies first."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["app.proxy.meter", "app.proxy.lines", "app.proxy.forward", "app.proxy.request_body"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
