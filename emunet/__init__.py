"""emunet: a miniature Kubernetes network on one Linux machine."""

__version__ = "0.1.0"
