"""The names a spec is checked against: enums, permission values and deviation parties.

The 0.3 tables are checked against `fsm.enums` (the names of mosaicolabs 0.3.2); a later protocol line
brings its own enums and permissions (see `fsm.spec.lines`), and its patched tables are
checked against those with the same loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import attrs

from fsm import enums

__all__ = ["SEED_VOCABULARY", "Vocabulary"]


@attrs.frozen
class Vocabulary:
    """`enums` maps each enum's public name to its class (aliases included); `permissions`
    are the values an operation's permission may take besides ``none``; a deviation's `who`
    is one of `server_parties` or `client_parties`."""

    enums: Mapping[str, type[Enum]]
    permissions: tuple[str, ...]
    server_parties: tuple[str, ...]
    client_parties: tuple[str, ...]

    @property
    def parties(self) -> tuple[str, ...]:
        return (*self.server_parties, *self.client_parties)

    def members(self, enum_name: str) -> tuple[str, ...] | None:
        """Member names of `enum_name`, or None when this vocabulary has no such enum."""
        cls = self.enums.get(enum_name)
        return None if cls is None else tuple(m.name for m in cls)


SEED_VOCABULARY = Vocabulary(
    enums={name: getattr(enums, name) for name in enums.__all__},
    permissions=tuple(p.value for p in enums.APIKeyPermissionEnum),
    server_parties=("mosaicod-0.3",),
    client_parties=("sdk-0.3.2",),
)
"""The default vocabulary: `fsm.enums` (mosaicolabs 0.3.2) and the 0.3 parties."""
