"""The two verdicts the differential test compares, on the same YAML text: the client's
(``kubetrain validate``'s own functions) and the API server's (a dry-run create of the JSON
that kubectl makes of that text, so that YAML 1.1 is read as kubectl reads it)."""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from kubetrain.api.manifests import check_text
from kubetrain.errors import UserError

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
GROUP, VERSION, PLURAL = "kubetrain.io", "v1alpha1", "trainingjobs"
#: The server adds this cause after real errors; it names no field.
_NOT_CHECKED = "some validation rules were not checked"
_LITERAL = "KTLITERAL{}"
_SOURCE = "manifest.yaml"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
PathPart = str | int


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One manifest and the verdict it should get: ``fields`` lists the field paths a
    rejection may name (any of them); ``""`` stands for a file-level error."""

    name: str
    text: str
    valid: bool
    fields: tuple[str, ...] = ()
    reason: str = ""
    #: a single document built from a base: safe to convert in one kubectl call with others
    single: bool = True


def parse_path(path: str) -> list[PathPart]:
    """``spec.data.cleaning.filters[0].op`` → ``['spec', 'data', ..., 'filters', 0, 'op']``."""
    parts: list[PathPart] = []
    for token in path.split("."):
        name, *indexes = token.split("[")
        if name:
            parts.append(name)
        parts.extend(int(index.rstrip("]")) for index in indexes)
    return parts


def format_path(parts: Iterable[PathPart]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def set_path(doc: Any, parts: list[PathPart], value: Any) -> None:
    """Set ``value`` at ``parts``, creating missing mappings; an index equal to the list's
    length appends."""
    node = doc
    for part, following in itertools.pairwise(parts):
        if isinstance(part, str) and not isinstance(node.get(part), dict | list):
            node[part] = [] if isinstance(following, int) else {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def delete_path(doc: Any, parts: list[PathPart]) -> None:
    node = doc
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]


class _QuotingDumper(yaml.SafeDumper):
    """Writes every string double-quoted: PyYAML leaves ``y`` or ``3e-4`` plain because it
    reads them back as strings, but kubectl's YAML 1.1 reader would not."""


def _quoted(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')


_QuotingDumper.add_representer(str, _quoted)


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_QuotingDumper, sort_keys=False, allow_unicode=True)


def base_manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES_DIR / name).read_text())


def manifest_text(entry: dict[str, Any]) -> str:
    """The YAML text of a corpus entry: its base with ``delete``, ``set`` and the verbatim
    ``yaml`` values applied."""
    if "raw" in entry:
        return entry["raw"]
    doc = base_manifest(entry["base"])
    for path in entry.get("delete", []):
        delete_path(doc, parse_path(path))
    for path, value in entry.get("set", {}).items():
        set_path(doc, parse_path(path), value)
    literals = list(entry.get("yaml", {}).items())
    for index, (path, _) in enumerate(literals):
        set_path(doc, parse_path(path), _LITERAL.format(index))
    text = dump(doc)
    for index, (_, verbatim) in enumerate(literals):
        text = text.replace(f'"{_LITERAL.format(index)}"', verbatim)
    return text


def _expected_fields(entry: dict[str, Any]) -> tuple[str, ...]:
    wanted = entry.get("field", ())
    return (wanted,) if isinstance(wanted, str) else tuple(wanted)


def load_cases(file_name: str, *, valid: bool) -> list[Case]:
    entries = yaml.safe_load((CORPUS_DIR / file_name).read_text())
    return [
        Case(
            name=entry["name"],
            text=manifest_text(entry),
            valid=valid,
            fields=_expected_fields(entry),
            reason=entry.get("reason", ""),
            single="raw" not in entry,
        )
        for entry in entries
    ]


# ------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Verdict:
    """Accepted, or rejected with (field path, message) pairs; a path is ``""`` where the
    error names no field (a file-level error, a CEL rule on the whole object)."""

    ok: bool
    errors: tuple[tuple[str, str], ...] = ()
    crash: str = ""

    def names(self, wanted: tuple[str, ...]) -> bool:
        """Whether a rejection names one of ``wanted`` (or a field inside it); an error
        without a path counts when its message mentions the field."""
        if self.ok:
            return False
        for target in wanted:
            if target == "":
                return True
            for path, message in self.errors:
                if path == target or path.startswith((f"{target}.", f"{target}[")):
                    return True
                if not path and target in message:
                    return True
        return False

    def describe(self, width: int = 110) -> str:
        if self.crash:
            return f"CRASH {self.crash}"[:width]
        if self.ok:
            return "ok"
        text = "; ".join(f"{p or '-'}: {m}" if m else p for p, m in self.errors)
        text = re.sub(r"\s+", " ", text)
        return text if len(text) <= width else text[: width - 1] + "…"


def client_verdict(text: str) -> Verdict:
    """What ``kubetrain validate`` says of ``text``, through its own ``check_text``; a
    file-level UserError is an error without a field."""
    errors: list[tuple[str, str]] = []
    try:
        for checked in check_text(text, _SOURCE):
            errors.extend((e.path, e.message) for e in checked.errors if checked.job is None)
    except UserError as exc:
        errors.append(("", str(exc)))
    except Exception as exc:  # a crash is the worst verdict: the user gets a traceback
        return Verdict(False, crash=f"{type(exc).__name__}: {exc}")
    return Verdict(not errors, tuple(errors))


@dataclass
class Conversion:
    """What kubectl made of one file: the objects it would send and, when it failed, its
    error (it may still have produced the objects before the broken document)."""

    objects: list[dict[str, Any]]
    error: str = ""


def _json_objects(stdout: str) -> list[dict[str, Any]]:
    """kubectl prints one JSON object per document, one after the other."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(stdout, at)) < len(stdout):
        obj, at = decoder.raw_decode(stdout, at)
        objects.append(obj)
    return objects


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _kubectl_json(kubectl: Kubectl, text: str) -> Conversion:
    proc = kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", stdin=text, check=False)
    try:
        objects = _json_objects(proc.stdout)
    except json.JSONDecodeError:
        objects = []
    error = proc.stderr.strip() if proc.returncode else ""
    return Conversion(objects, error)


@dataclass
class Timings:
    kubectl_calls: int = 0
    kubectl_s: float = 0.0
    client_s: float = 0.0
    server_s: float = 0.0

    def summary(self, cases: int) -> str:
        return (
            f"{cases} cases: client {self.client_s:.1f} s; kubectl {self.kubectl_calls} "
            f"call(s) {self.kubectl_s:.1f} s; server {self.server_s:.1f} s"
        )


def _convert_batch(kubectl: Kubectl, batch: list[Case], timings: Timings) -> dict[str, Conversion]:
    """One multi-document kubectl call for the whole batch (kubectl keeps the order); a
    batch that fails is split in halves, so one bad case costs a few calls, not one a case."""
    joined = _kubectl_json(kubectl, "---\n".join(c.text for c in batch))
    timings.kubectl_calls += 1
    if not joined.error and len(joined.objects) == len(batch):
        pairs = zip(batch, joined.objects, strict=True)
        return {case.name: Conversion([obj]) for case, obj in pairs}
    if len(batch) == 1:
        return {batch[0].name: joined}
    half = len(batch) // 2
    first = _convert_batch(kubectl, batch[:half], timings)
    return first | _convert_batch(kubectl, batch[half:], timings)


def convert_all(kubectl: Kubectl, cases: list[Case], timings: Timings) -> dict[str, Conversion]:
    """kubectl's JSON for every case: the single documents built from a base in batches,
    the raw files (several documents, broken YAML) one call each, in parallel."""
    began = time.perf_counter()
    batch = [c for c in cases if c.single]
    conversions = _convert_batch(kubectl, batch, timings) if batch else {}
    rest = [c for c in cases if not c.single]
    with ThreadPoolExecutor(max_workers=4) as pool:
        converted = pool.map(lambda c: _kubectl_json(kubectl, c.text), rest)
        conversions.update((c.name, conv) for c, conv in zip(rest, converted, strict=True))
    timings.kubectl_calls += len(rest)
    timings.kubectl_s += time.perf_counter() - began
    return conversions


def api_errors(exc: ApiException) -> tuple[tuple[str, str], ...]:
    """The fields an API server error names: the causes of a 422 Invalid, the fields of a
    400 strict-decoding error, else its message."""
    try:
        body = json.loads(exc.body or "{}")
    except json.JSONDecodeError:
        body = {}
    message = str(body.get("message") or exc.reason or exc)
    causes = (body.get("details") or {}).get("causes") or []
    named = [
        ("" if c.get("field") in (None, "", "<nil>") else c["field"], c.get("message", ""))
        for c in causes
        if _NOT_CHECKED not in c.get("message", "")
    ]
    if named:
        return tuple(named)
    unknown = re.findall(r'(?:unknown|duplicate) field "([^"]+)"', message)
    if unknown:
        return tuple((path, "unknown field") for path in unknown)
    return (("", f"{exc.status}: {message}"),)


class Server:
    """Dry-run creates with strict field validation, as ``kubectl create`` would send them."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.objects = k8s.CustomObjectsApi(api)
        self.namespace = namespace

    def verdict(self, body: dict[str, Any]) -> Verdict:
        body = copy.deepcopy(body)
        if isinstance(body.get("metadata"), dict):
            body["metadata"]["namespace"] = self.namespace
        try:
            self.objects.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body,
                dry_run="All", field_validation="Strict",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status not in (400, 422):
                raise
            return Verdict(False, api_errors(exc))
        return Verdict(True)


@dataclass(frozen=True)
class ServerSide:
    """kubectl and then the API server: ``api`` judges only the objects kubectl sent."""

    kubectl_error: str
    api: Verdict

    @property
    def verdict(self) -> Verdict:
        if not self.kubectl_error:
            return self.api
        errors = (("", f"kubectl: {self.kubectl_error}"), *self.api.errors)
        return Verdict(False, errors)


def _combine(verdicts: list[Verdict]) -> Verdict:
    errors = tuple(e for v in verdicts for e in v.errors)
    return Verdict(all(v.ok for v in verdicts), errors)


@dataclass(frozen=True)
class Outcome:
    case: Case
    client: Verdict
    server: ServerSide


def judge(cases: list[Case], kubectl: Kubectl, server: Server) -> tuple[list[Outcome], Timings]:
    """Both verdicts for every case, with the time each side took."""
    timings = Timings()
    began = time.perf_counter()
    clients = {c.name: client_verdict(c.text) for c in cases}
    timings.client_s = time.perf_counter() - began
    conversions = convert_all(kubectl, cases, timings)
    began = time.perf_counter()
    sent = [(c.name, obj) for c in cases for obj in conversions[c.name].objects]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda pair: server.verdict(pair[1]), sent))
    timings.server_s = time.perf_counter() - began
    per_case: dict[str, list[Verdict]] = {c.name: [] for c in cases}
    for (name, _), result in zip(sent, results, strict=True):
        per_case[name].append(result)
    outcomes = [
        Outcome(
            c,
            clients[c.name],
            ServerSide(conversions[c.name].error, _combine(per_case[c.name])),
        )
        for c in cases
    ]
    return outcomes, timings


# ---------------------------------------------------------------------- comparison


def problems(outcome: Outcome) -> list[str]:
    """Why a case fails: the two sides differ, both differ from the intended verdict, or
    a rejection does not name the expected field."""
    case, client, server = outcome.case, outcome.client, outcome.server.verdict
    found = []
    if client.crash:
        found.append("client crashed")
    if client.ok != server.ok:
        found.append(
            "client accepts, server rejects" if client.ok else "client rejects, server accepts"
        )
    elif client.ok != case.valid:
        found.append("both accept" if client.ok else "both reject")
    if not case.valid:
        want = " | ".join(f or "<file>" for f in case.fields)
        for side, verdict in (("client", client), ("server", server)):
            if not verdict.ok and not verdict.names(case.fields):
                found.append(f"{side} does not name {want}")
    return found


def client_only_problems(outcome: Outcome) -> list[str]:
    """A client-only case: the client rejects it, naming the field, and the API server
    accepts every object kubectl sent for it."""
    found = []
    if outcome.client.crash:
        found.append("client crashed")
    elif outcome.client.ok:
        found.append("client accepts")
    elif not outcome.client.names(outcome.case.fields):
        found.append(f"client does not name {outcome.case.fields[0] or '<file>'}")
    if not outcome.server.api.ok:
        found.append("server rejects an object kubectl sent")
    return found


def table(rows: list[tuple[Outcome, list[str]]]) -> str:
    """A plain-text table, one case a row, so that one run shows every disagreement."""
    header = ("case", "want", "client", "server", "problem")
    lines = [
        (
            o.case.name,
            "valid"
            if o.case.valid
            else "invalid @ " + " | ".join(f or "<file>" for f in o.case.fields),
            o.client.describe(),
            o.server.verdict.describe(),
            "; ".join(found),
        )
        for o, found in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = [
        " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *lines]
    ]
    return "\n".join([render[0], "-+-".join("-" * w for w in widths), *render[1:]])


def disagreements(
    outcomes: list[Outcome], check: Callable[[Outcome], list[str]] = problems
) -> Iterator[tuple[Outcome, list[str]]]:
    for outcome in outcomes:
        if found := check(outcome):
            yield outcome, found
