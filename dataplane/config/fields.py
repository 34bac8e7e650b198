"""Strict, field-path-aware reading of decoded YAML/JSON objects.

Every parser in this package reads its input through `Obj`, so each error names
the exact field (``spec.ports[1].port``) and unknown fields are always caught.
Value validators are plain functions ``value -> parsed`` that raise ValueError
with a human message; `Obj` attaches the field path.
"""
from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import re
import socket
from typing import Any, Callable, Hashable, Iterable, Mapping

Path = tuple[str | int, ...]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:  # label keys such as kubernetes.io/service-name contain dots
            out += f"[{json.dumps(part)}]"
    return out


class Invalid(Exception):
    """One problem with the field at `path`. `strict`: only a strict decoder refuses it (an
    unknown field), which lets kube-proxy's lenient fallback tell it from a real error."""

    def __init__(self, path: Path, message: str, strict: bool = False):
        super().__init__(f"{format_path(path) or '<document>'}: {message}")
        self.path = path
        self.message = message
        self.strict = strict


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a mapping"}


def describe_value(value: Any) -> str:
    if value is None:
        return "null"
    for typ, name in (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"):
        if isinstance(value, typ):
            text = repr(value)
            return f"{name} {text if len(text) <= 40 else text[:37] + '...'}"
    return {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def check_type(path: Path, value: Any, typ: type) -> Any:
    # bool is an int subclass in Python, but `port: true` is not a port.
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise Invalid(path, f"must be {_TYPE_NAMES[typ]}, got {describe_value(value)}")
    return value


def _convert(path: Path, value: Any, parse: Callable[[Any], Any] | None) -> Any:
    if parse is None:
        return value
    try:
        return parse(value)
    except ValueError as e:
        raise Invalid(path, str(e)) from None


def _show_key(key: Hashable) -> str:
    if isinstance(key, tuple):  # e.g. (80, "TCP") -> 80/TCP
        return "/".join(map(str, key))
    return repr(key) if isinstance(key, str) else str(key)


@functools.lru_cache(maxsize=None)
def _field_set(fields: tuple[str, ...]) -> frozenset[str]:
    return frozenset(fields)


class Obj:
    """A mapping at `path`. Fatal problems raise Invalid; problems that do not stop
    parsing the rest of the object (unknown fields, one bad list item, duplicates)
    are appended to the shared `errors` list, so a user sees all of them at once."""

    def __init__(self, data: Any, path: Path, errors: list[Invalid], fields: Iterable[str] | None = None):
        self.data: dict = check_type(path, data, dict)
        self.path = path
        self.errors = errors
        if fields is not None:
            known = fields if type(fields) is frozenset else _field_set(tuple(fields))
            if not self.data.keys() <= known:
                self._reject_unknown(known)

    def _reject_unknown(self, known: frozenset[str]) -> None:
        for key in self.data:
            if not isinstance(key, str):
                self.report((*self.path, str(key)), f"field names must be strings, got {describe_value(key)}")
            elif key not in known:
                # Compare case-insensitively: typos are often in camelCase ("podCidr").
                lowered = {k.lower(): k for k in known}
                hint = difflib.get_close_matches(key.lower(), lowered, 1)
                self.errors.append(Invalid(self.at(key), "unknown field" + (
                    f" (did you mean {lowered[hint[0]]!r}?)" if hint else ""), strict=True))

    def at(self, key: str | int) -> Path:
        return (*self.path, key)

    def report(self, path: Path, message: str) -> None:
        self.errors.append(Invalid(path, message))

    def has(self, key: str) -> bool:
        # JSON null and an absent field mean the same thing in the Kubernetes API.
        return self.data.get(key) is not None

    def get(self, key: str, typ: type, default: Any = None, *, required: bool = False,
            parse: Callable[[Any], Any] | None = None) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise Invalid(self.at(key), "required field is missing")
            return default
        # The common case inline (no path built): loading 100k objects calls this millions of times.
        if type(value) is not typ:
            check_type(self.at(key), value, typ)
        if parse is None:
            return value
        try:
            return parse(value)
        except ValueError as e:
            raise Invalid(self.at(key), str(e)) from None

    def obj(self, key: str, fields: Iterable[str] | None = None) -> Obj | None:
        value = self.data.get(key)
        return None if value is None else Obj(value, self.at(key), self.errors, fields)

    def section(self, key: str, fields: Iterable[str] | None = None) -> Obj:
        """Like obj(), but an absent section reads as an empty mapping."""
        return self.obj(key, fields) or Obj({}, self.at(key), self.errors)

    def strings(self, key: str) -> dict[str, str]:
        """A map of string to string (labels, annotations, selectors)."""
        o = self.obj(key)
        if o is None:
            return {}
        for k, v in o.data.items():
            check_type(o.at(str(k)), k, str)
            check_type(o.at(k), v, str)
        return o.data

    def _items(self, key: str) -> list[tuple[Path, Any]]:
        return [(self.at(key) + (i,), item) for i, item in enumerate(self.get(key, list, []))]

    def _collect(self, key: str, parsed: Iterable[tuple[Path, Callable[[], Any]]],
                 unique: Mapping[str, Callable[[Any], Hashable | None]]) -> tuple:
        out, seen = [], {label: {} for label in unique}
        for path, make in parsed:
            try:
                value = make()
            except Invalid as e:
                self.errors.append(e)
                continue
            dup = False
            for label, keyfn in unique.items():
                k = keyfn(value)
                if k is None:
                    continue
                if k in seen[label]:
                    self.report(path, f"duplicate {label} {_show_key(k)} (same as {format_path(seen[label][k])})")
                    dup = True
                else:
                    seen[label][k] = path
            if not dup:
                out.append(value)
        return tuple(out)

    def scalars(self, key: str, typ: type, parse: Callable[[Any], Any] | None = None, *,
                unique: str | None = None) -> tuple:
        """A list of scalars; `unique` names the value in duplicate errors."""
        return self._collect(
            key,
            ((p, lambda p=p, v=v: _convert(p, check_type(p, v, typ), parse)) for p, v in self._items(key)),
            {unique: lambda v: v} if unique else {})

    def objects(self, key: str, fields: Iterable[str] | None, parse: Callable[[Obj], Any], *,
                unique: Mapping[str, Callable[[Any], Hashable | None]] | None = None) -> tuple:
        """A list of mappings, each parsed by `parse`; `unique` maps a label to a key
        function (returning None to skip the item) that must not repeat."""
        fields = None if fields is None else frozenset(fields)
        return self._collect(
            key,
            ((p, lambda p=p, v=v: parse(Obj(v, p, self.errors, fields))) for p, v in self._items(key)),
            unique or {})


# ---- value validators: value -> parsed value, ValueError with a message ----

def one_of(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value
    return check


def in_range(lo: int, hi: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo}-{hi}, got {value}")
        return value
    return check


port_number = in_range(1, 65535)


_BROADCAST4 = ipaddress.IPv4Address("255.255.255.255")


def ip_address(value: str) -> IPAddress:
    try:
        # inet_pton is ~10x faster than ipaddress' parser and as strict for dotted quads
        # (no leading zeros, exactly four parts); everything else takes the full parser.
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, value), "big"))
    except (OSError, TypeError, ValueError):
        pass
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IPv4 or IPv6 address, got {value!r}") from None
    if getattr(addr, "scope_id", None):
        raise ValueError(f"must not carry a zone index, got {value!r}")
    return addr


def unicast_ip(value: str) -> IPAddress:
    """An address a host can own or a packet can be sent to."""
    addr = ip_address(value)
    for bad, what in (addr.is_unspecified, "unspecified"), (addr.is_multicast, "multicast"), \
            (addr == _BROADCAST4, "broadcast"):
        if bad:
            raise ValueError(f"must be a unicast address, got {what} address {value!r}")
    return addr


def non_special_ip(value: str) -> IPAddress:
    """An address the Kubernetes API accepts for externalIPs and endpoints."""
    addr = ip_address(value)
    if addr.version == 4:   # the same checks as below as integer ranges: this runs per endpoint
        x = int(addr)
        if x and x != 0xFFFFFFFF and x >> 28 != 14 and x >> 24 != 127 and x >> 16 != 0xA9FE:
            return addr
    addr = unicast_ip(value)
    if addr.is_loopback or addr.is_link_local:
        raise ValueError(f"must not be a loopback or link-local address, got {value!r}")
    return addr


def ip_network(strict: bool) -> Callable[[str], IPNetwork]:
    """CIDR parser. strict rejects host bits (our own config: a typo'd route must not
    silently widen); the Kubernetes API accepts and we normalise them (Go ParseCIDR)."""
    def parse(value: str) -> IPNetwork:
        text = value.strip()
        if "/" not in text:
            raise ValueError(f"must be a CIDR like 10.0.0.0/8, got {value!r}")
        try:
            net = ipaddress.ip_network(text, strict=False)
            ip_address(text.split("/")[0])  # also rejects zone indexes
        except ValueError:
            raise ValueError(f"must be a CIDR like 10.0.0.0/8, got {value!r}") from None
        if strict and net.network_address != ipaddress.ip_address(text.split("/")[0]):
            raise ValueError(f"has host bits set: {value!r} (did you mean {str(net)!r}?)")
        return net
    return parse


_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


def mac_address(value: str) -> bytes:
    """A unicast Ethernet address "aa:bb:cc:dd:ee:ff" as 6 bytes."""
    if not _MAC.fullmatch(value):
        raise ValueError(f"must be a MAC address like 02:00:00:00:00:01, got {value!r}")
    mac = bytes.fromhex(value.replace(":", ""))
    if mac[0] & 1 or mac == bytes(6):
        raise ValueError(f"must be a unicast MAC address, got {value!r}")
    return mac


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def dns_label(value: str) -> str:
    """RFC 1123 label (namespace names, port names)."""
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"must be a lowercase RFC 1123 label (a-z, 0-9, '-', at most 63 characters), got {value!r}")
    return value


def dns1035_label(value: str) -> str:
    """RFC 1035 label (Service names: must start with a letter)."""
    if len(value) > 63 or not _DNS1035_LABEL.fullmatch(value):
        raise ValueError("must be a lowercase RFC 1035 label (start with a letter; a-z, 0-9, '-'; "
                         f"at most 63 characters), got {value!r}")
    return value


def dns_subdomain(value: str) -> str:
    """RFC 1123 subdomain (Node and EndpointSlice names)."""
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(p) for p in value.split(".")):
        raise ValueError(f"must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.'), got {value!r}")
    return value


def iana_svc_name(value: str) -> str:
    """Named container port (IANA_SVC_NAME, RFC 6335): 1-15 characters, a-z 0-9 '-',
    at least one letter, no leading, trailing or doubled '-'."""
    if not (len(value) <= 15 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value)
            and "--" not in value and re.search(r"[a-z]", value)):
        raise ValueError("must be a port number or an IANA service name (1-15 characters of a-z, 0-9, '-', "
                         f"with at least one letter), got {value!r}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_duration(value: str) -> float:
    """Go time.ParseDuration ("24h0m0s", "1h", "1.5s") as seconds."""
    text = value[1:] if value[:1] in "+-" else value
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"must be a duration like \"1h30m\", \"30s\", got {value!r}")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return -seconds if value.startswith("-") else seconds
