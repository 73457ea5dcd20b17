"""emunet: a miniature Kubernetes network on one Linux machine."""

from emunet import native

__version__ = "0.1.0"

# the compiled hot modules or their Python sources (emunet.native: EMUNET_PURE=1, a stale build)
native.install()
