"""The nbscale control plane: broker, queue, limits, autoscaler and launchers."""
