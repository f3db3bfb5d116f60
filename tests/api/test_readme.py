"""The README's CRD reference is the generated one."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def test_readme_crd_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "scripts" / "sync_readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.synced(readme) == readme, "run `python scripts/sync_readme.py`"
    assert "`spec.strategy.lora.rank`" in readme
