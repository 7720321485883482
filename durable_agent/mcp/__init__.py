"""MCP servers as tools of the worker: configuration, connections, discovery and the mapping onto policy.

The configuration side (:mod:`.config`) is pure and light; the SDK is imported
by :mod:`.client`, :mod:`.catalog` and :mod:`.mapping` only.
"""
