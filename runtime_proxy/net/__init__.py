"""The proxy's I/O: listeners, connections, TLS, upstream pools, timers, admin, metrics and reload."""
