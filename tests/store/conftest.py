import pytest

from leukolens.store import SQLiteArchive


@pytest.fixture
def archive(tmp_path):
    with SQLiteArchive.open(tmp_path / "data") as opened:
        yield opened
