"""The Mosaico ingestion protocol as data.

The TOML files in this package are the single source of the protocol's lifecycles, its
operation catalogue, the server's resource lifecycles and the known deviations of real
implementations. `fsm.spec.load_spec()` reads and validates them; nothing else defines a
transition.
"""
