"""Safe loading and no network, checked on the code itself: every torch.load in the library is
weights-only, every np.load refuses pickles, nothing unpickles, evaluates or shells out, and an
in-process test cannot open a connection off this machine (conftest.py refuses it)."""

from __future__ import annotations

import ast
import socket

import pytest

from tests.conftest import REPO

LIBRARY = [p for folder in ("siren_bench", "baselines") for p in sorted((REPO / folder).rglob("*.py"))]


def _calls(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = (f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    else func.id if isinstance(func, ast.Name) else None)
            yield name, {k.arg: k.value for k in node.keywords}, node.lineno


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_every_checkpoint_load_in_the_library_is_weights_only():
    found = []
    for path in LIBRARY:
        for name, keywords, line in _calls(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if name == "torch.load":
                found.append(where)
                assert _is_const(keywords.get("weights_only"), True), f"{where}: torch.load without weights_only=True"
            if name == "np.load":
                assert _is_const(keywords.get("allow_pickle"), False), f"{where}: np.load without allow_pickle=False"
            assert name not in ("pickle.load", "pickle.loads", "yaml.load", "eval", "exec"), f"{where}: {name}"
            assert not _is_const(keywords.get("shell"), True), f"{where}: a shell command"
    # the scan sees the loader it guards, which every torch checkpoint and resume state goes through
    assert "siren_bench/weights.py" in {where.split(":")[0] for where in found}


def test_no_test_can_reach_another_machine():
    with pytest.raises(RuntimeError, match="tried to reach the network"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
