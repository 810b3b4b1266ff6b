"""Arrow Flight: the wire codec, the client transport and the reference server."""
