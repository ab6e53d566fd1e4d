"""The dependency rule: core/ imports no adapter, no composition root and no platform library."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("adapters", "bots", "slack_bolt", "slack_sdk", "discord")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


class TestLayering:
    """Dependencies point inward."""

    def test_core_imports_nothing_outward(self) -> None:
        """No module of core/ imports adapters, bots, slack_bolt, slack_sdk or discord."""
        files = sorted((ROOT / "core").rglob("*.py"))
        assert files
        offenders = {
            str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path)
                                                if m.split(".")[0] in FORBIDDEN_IN_CORE)
            for path in files
        }
        assert {k: v for k, v in offenders.items() if v} == {}

    def test_core_never_reads_the_environment(self) -> None:
        """Settings are built in bots/ and passed down."""
        for path in (ROOT / "core").rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "os.environ" not in text and "getenv(" not in text, path

    def test_adapters_do_not_import_bots(self) -> None:
        """Adapters import core and their platform library, never the composition root."""
        for path in (ROOT / "adapters").rglob("*.py"):
            assert not any(m.split(".")[0] == "bots" for m in imported_modules(path)), path

    def test_the_checker_sees_imports(self, tmp_path: Path) -> None:
        """The walker finds both import forms (so the tests above can fail)."""
        sample = tmp_path / "m.py"
        sample.write_text("import discord\nfrom slack_bolt.app import App\n", encoding="utf-8")
        assert imported_modules(sample) == {"discord", "slack_bolt.app"}
