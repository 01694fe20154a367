"""The nbscale worker runtime and the wire protocol shared by client, server and workers."""
