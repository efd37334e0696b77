"""``usher db backup`` refuses what it cannot write, with a sentence, before copying."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage.test_seed import _migrated
from usher.protocol.errors import ConfigError
from usher.storage.sqlite.backup import backup_sqlite


def test_backup_refuses_a_folder_or_a_missing_folder_with_a_sentence(tmp_path: Path) -> None:
    source = tmp_path / "live.db"
    _migrated(source)
    with pytest.raises(ConfigError, match="is a folder"):
        backup_sqlite(str(source), tmp_path, force=True)
    with pytest.raises(ConfigError, match="does not exist; create it"):
        backup_sqlite(str(source), tmp_path / "missing" / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.db"]
