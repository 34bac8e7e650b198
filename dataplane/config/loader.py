"""Reading configuration files into a `Config`.

Input is multi-document YAML, JSON, or a directory of such files (read in sorted
order). Every document holds one object, or a `List` of objects (as printed by
`kubectl get ... -o yaml`). Each object is validated on its own: an invalid object
is reported and left out entirely, the others still load.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Callable, Iterator

import yaml

from . import dataplane, k8s
from . import workloads
from .fields import Invalid, Obj, Path, format_path

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Problem:
    """Where and what: file, document index (0-based), object, field path, message."""
    source: str
    document: int | None
    kind: str | None
    name: str | None       # "namespace/name", or "name" for cluster-scoped objects
    path: str              # field path from the document root, e.g. "items[2].spec.ports[1].port"
    message: str
    line: int | None = None  # 1-based line in `source`, when known (YAML input)

    def __str__(self) -> str:
        where = self.source + (f":{self.line}" if self.line else "")
        where += f" [document {self.document}]" if self.document is not None else ""
        what = " ".join(filter(None, (self.kind, self.name)))
        return ": ".join(filter(None, (where, what, self.path, self.message)))


class ConfigError(ValueError):
    """The configuration has problems; `problems` lists them, str() one per line."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


@dataclass(frozen=True)
class Config:
    """Everything understood from one load. `dataplane` is None when no
    DataplaneConfiguration was given (e.g. when checking a kubectl dump alone)."""
    dataplane: dataplane.DataplaneConfig | None = None
    kube_proxy: k8s.KubeProxyConfig | None = None
    services: tuple[k8s.Service, ...] = ()
    endpoint_slices: tuple[k8s.EndpointSlice, ...] = ()
    nodes: tuple[k8s.Node, ...] = ()
    service_cidrs: tuple[k8s.ServiceCIDR, ...] = ()
    pods: tuple[workloads.Pod, ...] = ()
    namespaces: tuple[workloads.Namespace, ...] = ()
    sources: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()   # only non-empty with load(..., strict=False)
    warnings: tuple[Problem, ...] = ()   # objects skipped on purpose (kinds we do not use)

    @property
    def node_name(self) -> str | None:
        """This node: DataplaneConfiguration.nodeName, else KubeProxyConfiguration.hostnameOverride."""
        return (self.dataplane and self.dataplane.node_name) or (self.kube_proxy and self.kube_proxy.hostname_override)

    def endpoint_slices_for(self, service: k8s.Service) -> tuple[k8s.EndpointSlice, ...]:
        """The slices kube-proxy would use for `service` (ignored slices excluded)."""
        return tuple(s for s in self.endpoint_slices if s.namespace == service.namespace
                     and s.service_name == service.name and s.ignored is None)

    def describe(self) -> dict:
        """JSON-able summary of what was understood (`dataplane check`)."""
        return {
            "sources": list(self.sources),
            "nodeName": self.node_name,
            "dataplane": self.dataplane and self.dataplane.describe(),
            "kubeProxy": self.kube_proxy and self.kube_proxy.describe(),
            "services": [s.describe() for s in self.services],
            "endpointSlices": [s.describe() for s in self.endpoint_slices],
            "nodes": [n.describe() for n in self.nodes],
            "serviceCIDRs": [c.describe() for c in self.service_cidrs],
            "pods": [p.describe() for p in self.pods],
            "namespaces": [n.describe() for n in self.namespaces],
            "warnings": [str(w) for w in self.warnings],
            "problems": [str(p) for p in self.problems],
        }


@dataclass(frozen=True)
class _Kind:
    parse: Callable[[Obj], Any]
    fields: tuple[str, ...]
    attr: str  # Config attribute the parsed object goes to
    lenient: bool = False  # unknown fields are a warning (kube-proxy's loadConfig fallback)


KINDS: dict[tuple[str, str], _Kind] = {
    (dataplane.API_VERSION, dataplane.KIND): _Kind(dataplane.parse, dataplane.FIELDS, "dataplane"),
    ("v1", "Service"): _Kind(k8s.parse_service, k8s.OBJECT_FIELDS, "services"),
    ("discovery.k8s.io/v1", "EndpointSlice"): _Kind(k8s.parse_endpoint_slice, k8s.ENDPOINTSLICE_FIELDS, "endpoint_slices"),
    ("v1", "Node"): _Kind(k8s.parse_node, k8s.OBJECT_FIELDS, "nodes"),
    ("v1", "Pod"): _Kind(workloads.parse_pod, k8s.OBJECT_FIELDS, "pods"),
    ("v1", "Namespace"): _Kind(workloads.parse_namespace, k8s.OBJECT_FIELDS, "namespaces"),
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"):
        _Kind(k8s.parse_kube_proxy, k8s.KUBE_PROXY_FIELDS, "kube_proxy", lenient=True),
    ("networking.k8s.io/v1", "ServiceCIDR"): _Kind(k8s.parse_service_cidr, k8s.OBJECT_FIELDS, "service_cidrs"),
    ("networking.k8s.io/v1beta1", "ServiceCIDR"): _Kind(k8s.parse_service_cidr, k8s.OBJECT_FIELDS, "service_cidrs"),
}


def _group(api: str) -> str:
    """API group of an apiVersion: "" for the core group ("v1")."""
    return api.rpartition("/")[0]


# Kinds are matched by API group and kind, as the API server does: a Knative Service or a
# Calico Node is another kind altogether (skipped), while a version of one of our groups that
# we do not read (discovery.k8s.io/v1beta1 EndpointSlice: no longer served) is an error.
_KNOWN_KINDS: dict[tuple[str, str], list[str]] = {}
for _api, _kind in KINDS:
    _KNOWN_KINDS.setdefault((_group(_api), _kind), []).append(_api)
_SINGLETONS = {"dataplane", "kube_proxy"}


# ---- YAML ----

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlLoader(_Base):
    """Safe YAML as kubectl reads it: no sexagesimal numbers (an all-digit MAC such
    as 12:34:56:12:34:56 must stay a string), no timestamps (they are strings in the
    API), and duplicate keys are errors instead of silently keeping the last one."""
    yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers
             if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
        for ch, resolvers in _Base.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _line(node: yaml.Node | None, path: Path) -> int | None:
    """Line of the deepest YAML node along `path` (1-based)."""
    if node is None:
        return None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
    return node.start_mark.line + 1


class _Documents:
    """Decoded documents of one file: yields (index, data, yaml node or None)."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.error: Problem | None = None

    def __iter__(self) -> Iterator[tuple[int, Any, yaml.Node | None]]:
        if self.source.endswith(".json"):
            yield from self._json()
            return
        loader = _YamlLoader(self.text)
        index = 0
        try:
            while loader.check_node():
                node = loader.get_node()
                yield index, loader.construct_document(node), node
                index += 1
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            detail = ": ".join(filter(None, (getattr(e, "context", None), getattr(e, "problem", None)))) or str(e)
            self.error = Problem(self.source, index, None, None, "", f"invalid YAML: {detail}",
                                 mark.line + 1 if mark else None)
        except RecursionError:
            self.error = Problem(self.source, index, None, None, "", "invalid YAML: nested too deeply")
        finally:
            loader.dispose()

    def _json(self):
        def pairs(items):
            data = dict(items)
            if len(data) != len(items):   # linear: only look for the culprit when there is one
                seen = set()
                dup = next(k for k, _ in items if k in seen or seen.add(k))
                raise ValueError(f"duplicate key {dup!r}")
            return data
        try:
            data = json.loads(self.text, object_pairs_hook=pairs)
        except json.JSONDecodeError as e:
            self.error = Problem(self.source, 0, None, None, "", f"invalid JSON: {e.msg}", e.lineno)
            return
        except ValueError as e:
            self.error = Problem(self.source, 0, None, None, "", f"invalid JSON: {e}")
            return
        except RecursionError:
            self.error = Problem(self.source, 0, None, None, "", "invalid JSON: nested too deeply")
            return
        yield 0, data, None


# ---- objects ----

class _Builder:
    def __init__(self):
        self.objects: dict[str, list] = {}
        self.seen: dict[tuple, str] = {}  # identity -> where it was first defined
        self.where: dict[int, tuple] = {}  # id(Service) -> (source, index, node, path) for cross-object checks
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.sources: list[str] = []

    def add_text(self, text: str, source: str) -> None:
        self.sources.append(source)
        docs = _Documents(text, source)
        for index, data, node in docs:
            if data is not None:  # empty documents (a stray `---`) are allowed
                self._add_document(data, source, index, node)
        if docs.error:
            self.problems.append(docs.error)

    def _add_document(self, data: Any, source: str, index: int, node) -> None:
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(kind, str) and kind.endswith("List") and "items" in data:
            self._add_list(data, source, index, node)
        else:
            self._add_object(data, (), source, index, node)

    def _add_list(self, data: dict, source: str, index: int, node) -> None:
        """`v1 List` (kubectl) or a typed list such as ServiceList (API server), whose
        items carry no apiVersion/kind of their own."""
        item_kind = data["kind"][:-len("List")] or None
        items = data["items"]
        if not isinstance(items, list):
            self._problem(source, index, node, ("items",), data["kind"], None, "must be a list")
            return
        for i, item in enumerate(items):
            if item_kind and isinstance(item, dict):
                item = {"apiVersion": data.get("apiVersion"), "kind": item_kind, **item}
            self._add_object(item, ("items", i), source, index, node)

    def _add_object(self, data: Any, at: Path, source: str, index: int, node) -> None:
        if not isinstance(data, dict):
            self._problem(source, index, node, at, None, None, "an object must be a mapping, got " + type(data).__name__)
            return
        api, kind = data.get("apiVersion"), data.get("kind")
        label = _label(data)
        if not isinstance(kind, str) or not isinstance(api, str):
            self._problem(source, index, node, at, kind if isinstance(kind, str) else None, label,
                          "apiVersion and kind are required")
            return
        spec = KINDS.get((api, kind))
        if spec is None:
            supported = _KNOWN_KINDS.get((_group(api), kind))
            if supported or _group(api) == "dataplane":
                self._problem(source, index, node, at + ("apiVersion",), kind, label,
                              f"unsupported apiVersion {api!r} for {kind} (use "
                              f"{' or '.join(map(repr, supported or [dataplane.API_VERSION]))})")
            else:
                self.warnings.append(self._make(source, index, node, at, kind, label,
                                                f"skipped: {api} {kind} is not used by the dataplane"))
            return
        errors: list[Invalid] = []
        try:
            obj = spec.parse(Obj(data, at, errors, spec.fields))
        except Invalid as e:
            errors.append(e)
        except RecursionError:
            errors.append(Invalid(at, "nested too deeply"))
        if spec.lenient and errors and all(e.strict for e in errors):
            for e in errors:
                self.warnings.append(self._make(source, index, node, e.path, kind, label,
                                                f"{e.message}: ignored (lenient decoding, as kube-proxy)"))
        elif errors:
            for e in errors:
                self._problem(source, index, node, e.path, kind, label, e.message)
            return
        identity = (kind, getattr(obj, "namespace", None), getattr(obj, "name", None))
        here = f"{source} [document {index}]" + (f" {format_path(at)}" if at else "")
        if identity in self.seen:
            what = "only one is allowed" if spec.attr in _SINGLETONS else "duplicate object"
            self._problem(source, index, node, at, kind, label, f"{what}: already defined at {self.seen[identity]}")
            return
        self.seen[identity] = here
        if spec.attr == "services":
            self.where[id(obj)] = (source, index, node, at)
        self.objects.setdefault(spec.attr, []).append(obj)

    def _make(self, source, index, node, path, kind, name, message) -> Problem:
        return Problem(source, index, kind, name, format_path(path), message, _line(node, path))

    def _problem(self, *args) -> None:
        self.problems.append(self._make(*args))

    def problem(self, message: str, source: str = "", kind: str | None = None, name: str | None = None) -> None:
        self.problems.append(Problem(source, None, kind, name, "", message))

    def _allocations(self) -> None:
        """The API server's allocators: a ClusterIP, and a node port (NodePort or
        healthCheckNodePort, any protocol), belong to one Service. The first one keeps it;
        a later Service claiming it is refused, as its create would be."""
        ips: dict = {}
        node_ports: dict[int, str] = {}
        kept = []
        for svc in self.objects.get("services", ()):
            label = f"{svc.namespace}/{svc.name}"
            claims = [(("spec", "clusterIPs", i), ips, ip, "cluster IP") for i, ip in enumerate(svc.cluster_ips)]
            claims += [(("spec", "ports", i, "nodePort"), node_ports, p.node_port, "node port")
                       for i, p in enumerate(svc.ports) if p.node_port]
            if svc.health_check_node_port:
                claims.append((("spec", "healthCheckNodePort"), node_ports, svc.health_check_node_port, "node port"))
            clash = next(((path, what, value, owner[value]) for path, owner, value, what in claims
                          if owner.get(value, label) != label), None)
            if clash:
                path, what, value, other = clash
                source, index, node, at = self.where[id(svc)]
                self._problem(source, index, node, at + path, "Service", label,
                              f"{what} {value} is already allocated to Service {other}")
                continue
            for _, owner, value, _ in claims:
                owner[value] = label
            kept.append(svc)
        if "services" in self.objects:
            self.objects["services"] = kept

    def finish(self, strict: bool) -> Config:
        self._allocations()
        values = {attr: (objs[0] if attr in _SINGLETONS else tuple(objs)) for attr, objs in self.objects.items()}
        dp, kp = values.get("dataplane"), values.get("kube_proxy")
        if dp and kp and kp.hostname_override and kp.hostname_override != dp.node_name:
            self.problem(f"hostnameOverride {kp.hostname_override!r} differs from DataplaneConfiguration nodeName "
                         f"{dp.node_name!r}: both name this node", self.seen[("KubeProxyConfiguration", None, None)],
                         "KubeProxyConfiguration")
        if strict and self.problems:
            raise ConfigError(self.problems)
        return Config(**values, sources=tuple(self.sources), problems=tuple(self.problems),
                      warnings=tuple(self.warnings))


def _label(data: dict) -> str | None:
    """namespace/name of a raw object for error messages, before it is validated."""
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if isinstance(ns, str) else meta["name"]


def load(path: str | FsPath, strict: bool = True) -> Config:
    """Load a file, or every *.yaml, *.yml and *.json file of a directory in sorted
    order. strict=True raises ConfigError on any problem; strict=False returns the
    valid objects with the problems in `Config.problems`."""
    path = FsPath(path)
    builder = _Builder()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            builder.problem(f"no {', '.join('*' + s for s in SUFFIXES)} files in directory", str(path))
    else:
        files = [path]
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            builder.problem(f"cannot read: {getattr(e, 'strerror', None) or e}", str(f))
            continue
        builder.add_text(text, str(f))
    return builder.finish(strict)


def loads(text: str, source: str = "<string>", strict: bool = True) -> Config:
    """Load configuration text; `source` names it in errors (a *.json name selects JSON)."""
    builder = _Builder()
    builder.add_text(text, source)
    return builder.finish(strict)


def parse_object(data: Any, source: str = "<api>") -> tuple[str | None, Any, tuple[Problem, ...], tuple[Problem, ...]]:
    """One decoded object (as a watch event carries it) -> (Config attribute, parsed object,
    problems, warnings). The object is None when it is invalid or of a kind we do not use."""
    builder = _Builder()
    builder._add_object(data, (), source, 0, None)
    attr, objs = next(iter(builder.objects.items()), (None, ()))
    return attr, (objs[0] if objs else None), tuple(builder.problems), tuple(builder.warnings)
