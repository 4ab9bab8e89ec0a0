"""runtime_proxy/config/child.py: the serving process reads the config loader child's answer.
An answer cut short (the child killed while writing) is a LoadError, whatever byte it ends on,
so that `POST /reload` is answered 400 instead of never (net/reload.py catches LoadError)."""

from __future__ import annotations

import json
import os

import pytest

from runtime_proxy.config import child
from runtime_proxy.config.child import LoadError


def _exited_child() -> int:
    pid = os.fork()
    if pid == 0:   # pragma: no cover (the child)
        os._exit(0)
    return pid


@pytest.mark.parametrize("cut", [1, 10, 27, 28, 29, 31])   # 28: inside the two bytes of `é`
def test_an_answer_cut_anywhere_is_a_load_error(cut):
    answer = json.dumps({"config": {"service": "café"}}, ensure_ascii=False).encode()
    with pytest.raises(LoadError, match="stopped without an answer"):
        child.finish(_exited_child(), answer[:cut])


def test_a_whole_answer_is_the_config():
    answer = json.dumps({"config": {"service": "café"}}, ensure_ascii=False).encode()
    assert child.finish(_exited_child(), answer) == {"service": "café"}
