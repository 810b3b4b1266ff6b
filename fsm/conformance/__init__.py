"""Conformance: of servers (requirement cases and model-based exploration) and of clients
(their traces checked against the tables)."""
