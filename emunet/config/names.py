"""Kubernetes name, label and port-name rules (k8s.io/apimachinery/pkg/util/validation).

Each check returns None when the value is valid, else a short reason phrased for a user.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[^=\x00-\x1f\x7f]+")


def dns1123_label(value: str) -> str | None:
    """RFC 1123 label: node, container, hostname (at most 63 chars, lower case, digits, '-')."""
    if len(value) > 63:
        return f"must be at most 63 characters (has {len(value)})"
    if not _DNS1123_LABEL.fullmatch(value):
        return ("must be a DNS-1123 label: lower-case letters, digits and '-', starting and "
                "ending with a letter or digit")
    return None


def dns1123_subdomain(value: str) -> str | None:
    """RFC 1123 subdomain: pod names (at most 253 chars, dot-separated labels)."""
    if len(value) > 253:
        return f"must be at most 253 characters (has {len(value)})"
    if not all(_DNS1123_LABEL.fullmatch(part) for part in value.split(".")):
        return ("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
                "each part starting and ending with a letter or digit")
    return None


def dns1035_label(value: str) -> str | None:
    """RFC 1035 label: namespace and Service names (they become DNS labels, so they must
    start with a letter)."""
    if len(value) > 63:
        return f"must be at most 63 characters (has {len(value)})"
    if not _DNS1035_LABEL.fullmatch(value):
        return ("must be a DNS-1035 label: lower-case letters, digits and '-', starting with a "
                "letter and ending with a letter or digit")
    return None


def label_key(key: str) -> str | None:
    """`[prefix/]name`: prefix a DNS-1123 subdomain, name at most 63 chars of [-A-Za-z0-9_.]."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "the prefix before '/' must not be empty"
        bad = dns1123_subdomain(prefix)
        if bad:
            return f"prefix {prefix!r} {bad}"
    if not name:
        return "the name part must not be empty"
    if len(name) > 63:
        return f"the name part must be at most 63 characters (has {len(name)})"
    if not _QUALIFIED_NAME.fullmatch(name):
        return ("the name part must be letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit")
    return None


def label_value(value: str) -> str | None:
    """Empty, or at most 63 chars of [-A-Za-z0-9_.] starting and ending alphanumeric."""
    if value == "":
        return None
    if len(value) > 63:
        return f"must be at most 63 characters (has {len(value)})"
    if not _QUALIFIED_NAME.fullmatch(value):
        return ("must be letters, digits, '-', '_' or '.', starting and ending with a letter "
                "or digit")
    return None


def port_name(value: str) -> str | None:
    """IANA service name (RFC 6335 section 5.1): at most 15 chars, a-z0-9 and '-', at least
    one letter, no leading/trailing or double '-'."""
    if len(value) > 15:
        return f"must be at most 15 characters (has {len(value)})"
    if not _IANA_SVC_NAME.fullmatch(value):
        return "must be lower-case letters, digits and '-', starting and ending alphanumeric"
    if "--" in value:
        return "must not contain '--'"
    if not any(c.isalpha() for c in value):
        return "must contain at least one letter"
    return None


def env_name(value: str) -> str | None:
    """Environment variable names: any printable characters except '=' (Kubernetes 1.30+)."""
    if not _ENV_NAME.fullmatch(value):
        return "must be non-empty printable characters without '='"
    return None
