"""Implementations of the transport interface defined in `fsm.transport`."""
