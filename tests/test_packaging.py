"""An installed wheel carries the spec files and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from fsm.spec import SPEC_FILES

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_specs_and_entry_point(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mosaico_fsm-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for spec_file in SPEC_FILES:
            assert f"specs/{spec_file}" in names
        for line_file in sorted((ROOT / "specs" / "lines").glob("*.toml")):
            assert f"specs/lines/{line_file.name}" in names
        assert "fsm/py.typed" in names and "transport/py.typed" in names
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "mosaico-fsm = fsm.cli:main" in zf.read(entry_points).decode()
