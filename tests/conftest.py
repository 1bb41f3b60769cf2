import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("ARCHLORE_DATA", Path(__file__).resolve().parents[1] / "../shared/data")).resolve()
HAS_DATA = (DATA / "nb201" / "nb201_all.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"benchmark data not found at {DATA} (set ARCHLORE_DATA)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not HAS_DATA:
        pytest.skip(f"benchmark data not found at {DATA} (set ARCHLORE_DATA)")
    return DATA
