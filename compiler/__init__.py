"""meshc: a service-mesh policy compiler.

The public entry points live in :mod:`compiler.api` (library) and :mod:`compiler.cli` (command line).
"""

__version__ = "0.1.0"
