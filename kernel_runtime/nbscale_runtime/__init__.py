"""The nbscale worker runtime and the wire protocol shared by client, server and workers."""

# nbscale's one version number (the wheel's, through [tool.hatch.version]); nbscale and
# nbscale_server report this one, and worker images carry it with the runtime.
__version__ = "0.1.0"
