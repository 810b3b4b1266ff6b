"""Print, as JSON, every enum of one installed mosaicolabs release's `mosaicolabs.enum`.

    python tests/sdks/enum_dump.py <release directory>

The enum package is loaded from its files under a private package name, so neither the rest
of the SDK nor another installed release is imported. Output: {public name: {"class": the
class's own name, "kind": "str" | "int", "members": [[name, value], ...]}}.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import sys
from pathlib import Path


def dump(release: Path) -> dict[str, object]:
    package = release / "mosaicolabs" / "enum"
    spec = importlib.util.spec_from_file_location(
        "_released_enums", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no enum package under {release}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out: dict[str, object] = {}
    for name, value in sorted(vars(module).items()):
        if isinstance(value, type) and issubclass(value, enum.Enum) and not name.startswith("_"):
            out[name] = {
                "class": value.__name__,
                "kind": "int" if issubclass(value, int) else "str",
                "members": [[m.name, m.value] for m in value],
            }
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(dump(Path(sys.argv[1]))) + "\n")
