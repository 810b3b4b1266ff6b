"""Install every protocol line's SDK release side by side, for the tests that compare them.

Each release named by a line's `enum_release` (`specs/lines/*.toml`) is installed with
``pip install --no-deps --target <dir>/mosaicolabs-<version>`` into a cache directory:
``$MOSAICO_FSM_SDK_DIR``, or ``~/.cache/mosaico-fsm/sdks``. A release already there is kept.
Run it directly (CI does) or let the tests call `ensure_releases`.

    python tests/sdks/install.py          # prints one line per release
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fsm.spec.lines import load_lines

MARKER = ".mosaico-fsm-installed"


def sdk_dir() -> Path:
    """Where the releases live."""
    configured = os.environ.get("MOSAICO_FSM_SDK_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "mosaico-fsm" / "sdks"


def releases() -> list[str]:
    """The release each line's enums are compared with, oldest line first."""
    return [line.enum_release for line in load_lines().values()]


class InstallError(RuntimeError):
    """pip could not install a release."""


def ensure_release(version: str, root: Path | None = None) -> Path:
    """The directory holding `mosaicolabs` `version` (its package under `mosaicolabs/`),
    installed now if it is not there yet."""
    root = root or sdk_dir()
    target = root / f"mosaicolabs-{version}"
    if (target / MARKER).exists():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".mosaicolabs-{version}-", dir=root))
    except OSError as exc:
        raise InstallError(f"cannot install mosaicolabs=={version} under {root}: {exc}") from exc
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        "--target",
        str(staging),
        f"mosaicolabs=={version}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not (staging / "mosaicolabs" / "enum" / "__init__.py").exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(
            f"pip could not install mosaicolabs=={version} (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    (staging / MARKER).write_text(version + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def ensure_releases(root: Path | None = None) -> dict[str, Path]:
    """Every line's release, installed."""
    return {version: ensure_release(version, root) for version in releases()}


def main() -> int:
    try:
        installed = ensure_releases()
    except InstallError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    for version, path in installed.items():
        sys.stdout.write(f"mosaicolabs {version}: {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
