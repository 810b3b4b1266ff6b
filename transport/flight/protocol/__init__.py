"""The Arrow Flight protobuf messages (generated from flight.proto; see README.md here)."""
