"""Bad configuration, fuzzed: the real ``Pulumi.dev.yaml`` document mutated at random (wrong
types, out-of-range numbers, missing and unknown keys, duplicate tiers, dangling group queues,
nested garbage, odd scalars such as NaN) must either load *and* build, under Pulumi's mocks, a
stack that passes the policy rules, or fail with :class:`SettingsError` whose every key is a
path of the document. Any other exception (a traceback from deep inside) fails the test.

A mutation that is wrong on its own (a string where a number belongs, a key the model does
not know, a tier that a group names but nobody defines...) must moreover be *named*, as long
as a later mutation has not overwritten it: "the settings are invalid" without the key is not
enough. The schema below is written out by hand from ``infra/settings/``'s documentation,
not derived from the code under test.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import plan as offline_plan
from infra.policy import rules
from infra.settings import PROJECT, SettingsError, StackSettings, fill_missing, from_mapping

ROOT = Path(__file__).resolve().parents[2]
# The dev stack file with the deploy-only values it leaves to its operator (image, secret ARNs,
# VPC, subnets) from the plan's fixture: those keys are mutated too.
BASE: dict[str, Any] = fill_missing(
    yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text()), offline_plan.deploy_values("dev")
)[0]
NS = f"{PROJECT}:"
STACK = "dev"

DocPath = tuple[str | int, ...]

# The model, by key pattern ("tiers[].name" = the name of any tier; "" = the config mapping).
MAPPINGS = {"", "dlq", "alarms", "network", "tiers[]", "workerGroups[]", "workerGroups[].scaling"}
LISTS = {
    "tiers",
    "workerGroups",
    "alarms.emails",
    "network.privateSubnetIds",
    "workerGroups[].queues",
    "workerGroups[].downstream",
}
STRINGS = {
    "aws:region",
    "namePrefix",
    "image",
    "clusterName",
    "resultBackendSecretArn",
    "dataRedisSecretArn",
    "tiers[].name",
    "tiers[].queue",
    "dlq.queue",
    "network.vpcId",
    "workerGroups[].name",
    "workerGroups[].architecture",
    "workerGroups[].scaling.metric",
    "alarms.emails[]",
    "network.privateSubnetIds[]",
    "workerGroups[].queues[]",
    "workerGroups[].downstream[]",
}
BOOLEANS = {"protect", "network.assignPublicIp", "workerGroups[].spot"}
NUMBERS = {"workerGroups[].scaling.target"}
WHOLE = {"workerGroups[].cpu", "workerGroups[].memory", "logRetentionDays"}  # and RANGES
# Whole numbers with their inclusive AWS / model range (None: no upper bound).
RANGES: dict[str, tuple[int, int | None]] = {
    "tiers[].visibilityTimeoutSeconds": (0, 43_200),
    "tiers[].messageRetentionSeconds": (60, 1_209_600),
    "tiers[].maximumMessageSize": (1_024, 262_144),
    "tiers[].receiveWaitTimeSeconds": (0, 20),
    "tiers[].delaySeconds": (0, 900),
    "tiers[].maxReceiveCount": (1, 1_000),
    "tiers[].softTimeLimitSeconds": (1, None),
    "tiers[].timeLimitSeconds": (1, None),
    "dlq.messageRetentionSeconds": (60, 1_209_600),
    "dlq.visibilityTimeoutSeconds": (0, 43_200),
    "alarms.periodSeconds": (60, 86_400),
    "alarms.depthThreshold": (1, None),
    "alarms.depthEvaluationPeriods": (1, 100),
    "alarms.ageThresholdSeconds": (1, None),
    "alarms.ageEvaluationPeriods": (1, 100),
    "alarms.dlqThreshold": (1, None),
    "alarms.dlqEvaluationPeriods": (1, 100),
    "workerGroups[].concurrency": (1, 64),
    "workerGroups[].minCapacity": (0, 1000),
    "workerGroups[].maxCapacity": (1, 1000),
    "workerGroups[].scaling.scaleOutCooldownSeconds": (0, 3600),
    "workerGroups[].scaling.scaleInCooldownSeconds": (0, 3600),
}
# Values outside a set (Fargate cpu units, CloudWatch Logs retention days).
ALLOWED = {
    "workerGroups[].cpu": {256, 512, 1024, 2048, 4096, 8192, 16384},
    "logRetentionDays": {
        1,
        3,
        5,
        7,
        14,
        30,
        60,
        90,
        120,
        150,
        180,
        365,
        400,
        545,
        731,
        1096,
        1827,
        2192,
        2557,
        2922,
        3288,
        3653,
    },
}
REQUIRED = {
    "aws:region",
    "namePrefix",
    "tiers",
    "workerGroups",
    "tiers[].name",
    "tiers[].queue",
    "workerGroups[].name",
    "workerGroups[].queues",
}


def kind(pattern: str) -> str | None:
    if pattern in MAPPINGS:
        return "dict"
    if pattern in LISTS:
        return "list"
    if pattern in STRINGS:
        return "str"
    if pattern in BOOLEANS:
        return "bool"
    if pattern in NUMBERS:
        return "number"
    if pattern in WHOLE or pattern in RANGES:
        return "int"
    return None


# --------------------------------------------------------------------------------------------
# Paths in the document, and the keys SettingsError reports
# --------------------------------------------------------------------------------------------

_MISSING: Any = object()


def resolve(doc: Any, path: DocPath) -> Any:
    node = doc
    for part in path:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_mapping = isinstance(part, str) and isinstance(node, Mapping) and part in node
        if not (in_list or in_mapping):
            return _MISSING
        node = node[part]
    return node


def pattern(path: DocPath) -> str | None:
    """The model's pattern of a document path under ``config``, or None off the model (a
    stray or foreign key, or anything inside a value the model does not expect)."""
    if not path or path[0] != "config":
        return None
    if len(path) == 1:
        return ""
    top = str(path[1])
    if top == "aws:region":
        head = top
    elif top.startswith(NS):
        head = top[len(NS) :]
    else:
        return None
    out = head
    for part in path[2:]:
        out += "[]" if isinstance(part, int) else f".{part}"
    return out


_SEGMENT = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def key_path(doc: Any, key: str) -> DocPath:
    """The document path of a reported key: ``tiers[0].name`` is
    ``config / amply-jobs:tiers / 0 / name``; a key without namespace that the document holds
    only without namespace is a stray one (``config / key``)."""
    if key == "(document)":
        return ()
    if key == "config":
        return ("config",)
    parts: list[str | int] = [int(i) if i else n for i, n in _SEGMENT.findall(key)]
    head = str(parts[0])
    config = doc.get("config") if isinstance(doc, Mapping) else None
    config = config if isinstance(config, Mapping) else {}
    stray = ":" in head or (head in config and NS + head not in config)
    return ("config", head if stray else NS + head, *parts[1:])


def writable(doc: Any, path: DocPath) -> bool:
    """A missing key that one can add: its nearest existing ancestor is a mapping (or null,
    YAML's empty item) and the missing part is mapping keys (``network.vpcId`` with no
    ``network`` at all), not list items."""
    cut = len(path)
    while cut > 0 and resolve(doc, path[:cut]) is _MISSING:
        cut -= 1
    ancestor = resolve(doc, path[:cut])
    missing = path[cut:]
    return (
        bool(missing)
        and all(isinstance(p, str) for p in missing)
        and (ancestor is None or isinstance(ancestor, Mapping))
    )


def unexplained_keys(doc: Any, keys: list[str]) -> list[str]:
    """Reported keys that are neither a path of ``doc``, nor a key one could add to it, nor
    under another reported key (``tiers[0].name`` after ``tiers[0]`` was named as not a
    mapping)."""
    bad = []
    for key in keys:
        path = key_path(doc, key)
        if resolve(doc, path) is not _MISSING:
            continue
        if writable(doc, path):
            continue
        if any(
            other != key and (key.startswith(other + ".") or key.startswith(other + "["))
            for other in keys
        ):
            continue
        bad.append(key)
    return bad


def misquoted(doc: Any, exc: SettingsError) -> list[str]:
    """Problems at a scalar of the document that quote another value than it holds (the key
    points at the wrong place)."""
    wrong = []
    for p in exc.problems:
        held = resolve(doc, key_path(doc, p.key))
        if held is _MISSING or isinstance(held, list | dict):
            continue
        if not (_same(held, p.value) or (held is None and p.value in ("", None))):
            wrong.append(f"{p.key}: document holds {held!r}, error says {p.value!r}")
    return wrong


def nodes(doc: Any, path: DocPath = ("config",)) -> Iterator[tuple[DocPath, Any]]:
    """Every node under ``config`` (excluded) with its path."""
    node = resolve(doc, path)
    children: list[tuple[str | int, Any]] = []
    if isinstance(node, Mapping):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    for k, v in children:
        yield (*path, k), v
        yield from nodes(doc, (*path, k))


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------


@dataclass
class Mutation:
    kind: str
    path: DocPath
    value: Any  # _MISSING deletes
    named: DocPath | None = None
    """Wrong on its own: the error must name this path, if it still holds ``named_value``."""
    named_value: Any = None

    def apply(self, doc: dict[str, Any]) -> None:
        parent = resolve(doc, self.path[:-1])
        last = self.path[-1]
        if self.value is _MISSING:
            del parent[last]
        elif isinstance(parent, list) and last == len(parent):
            parent.append(copy.deepcopy(self.value))
        else:
            parent[last] = copy.deepcopy(self.value)

    def must_be_named(self, doc: dict[str, Any]) -> bool:
        if self.named is None:
            return False
        if self.named_value is _MISSING:
            parent = resolve(doc, self.named[:-1])
            return isinstance(parent, Mapping) and self.named[-1] not in parent
        held = resolve(doc, self.named)
        if held is _MISSING or not _same(held, self.named_value):
            return False
        # Wrong only relative to the rest: a later change may have made it right.
        if self.kind == "dangling_queue":
            return "ghost" not in tier_names(doc)
        if self.kind == "duplicate_tier":
            return tier_names(doc).count(self.named_value) >= 2
        return True


def _same(a: Any, b: Any) -> bool:
    """Equality that tells 1 from True and 1.0 and holds for NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


safe_names = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).map(lambda s: "x" + s)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
garbage = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(safe_names, inner, max_size=4),
    max_leaves=12,
)
some_list = st.lists(scalars, min_size=1, max_size=2)
some_dict = st.dictionaries(safe_names, scalars, min_size=1, max_size=2)
# Values of another kind than the model's; never None (None means "the default").
OTHER_KIND = {
    "bool": st.one_of(st.integers(-5, 5), st.text(min_size=1, max_size=6), some_list, some_dict),
    "number": st.one_of(
        st.booleans(),
        st.text(max_size=6),
        some_list,
        some_dict,
        st.sampled_from([math.nan, math.inf, -math.inf]),
    ),
    "int": st.one_of(
        st.booleans(),
        st.text(max_size=6),
        some_list,
        some_dict,
        st.floats().filter(lambda f: not f.is_integer()),
    ),
    "str": st.one_of(st.booleans(), st.integers(-99, 99), some_list, some_dict),
    "list": st.one_of(
        st.booleans(), st.integers(-99, 99), st.text(min_size=1, max_size=6), some_dict
    ),
    "dict": st.one_of(
        st.booleans(), st.integers(-99, 99), st.text(min_size=1, max_size=6), some_list
    ),
}

Maker = Callable[[st.DataObject, dict[str, Any]], Mutation | None]


def wrong_type(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    typed = [(p, k) for p, _ in nodes(doc) if (k := kind(pattern(p) or "?")) is not None]
    if not typed:
        return None
    path, k = data.draw(st.sampled_from(typed), label="wrong type at")
    new = data.draw(OTHER_KIND[k], label="value")
    return Mutation("wrong_type", path, new, path, new)


def out_of_range(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    ranged = [p for p, _ in nodes(doc) if pattern(p) in RANGES or pattern(p) in ALLOWED]
    if not ranged:
        return None
    path = data.draw(st.sampled_from(ranged), label="out of range at")
    pat = str(pattern(path))
    if pat in RANGES:
        lo, hi = RANGES[pat]
        below = st.integers(-(2**31), lo - 1)
        value = data.draw(below if hi is None else below | st.integers(hi + 1, 2**40))
    else:
        value = data.draw(st.integers(-10, 10**6).filter(lambda v: v not in ALLOWED[pat]))
    return Mutation("out_of_range", path, value, path, value)


def in_range(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    """A change the model allows on its own, so that many examples load and get built."""
    ranged = [p for p, _ in nodes(doc) if pattern(p) in RANGES]
    if not ranged:
        return None
    path = data.draw(st.sampled_from(ranged), label="in range at")
    lo, hi = RANGES[str(pattern(path))]
    return Mutation("in_range", path, data.draw(st.integers(lo, hi if hi is not None else 10**6)))


def missing_key(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    keys = [p for p, _ in nodes(doc) if isinstance(p[-1], str)]
    if not keys:
        return None
    path = data.draw(st.sampled_from(keys), label="delete")
    required = pattern(path) in REQUIRED
    return Mutation("missing_key", path, _MISSING, path if required else None, _MISSING)


def unknown_key(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    mappings = [("config",)] + [p for p, v in nodes(doc) if isinstance(v, Mapping)]
    parent = data.draw(st.sampled_from(mappings), label="unknown key in")
    name = data.draw(safe_names, label="key")
    if parent == ("config",):
        name = data.draw(st.sampled_from([NS + name, name, "other:" + name]), label="namespace")
    value = data.draw(scalars, label="value")
    path = (*parent, name)
    # Another project's key (``other:x``) is the engine's business; a key inside garbage is
    # reported through the garbage.
    ours = pattern(parent) in MAPPINGS and not name.startswith("other:")
    return Mutation("unknown_key", path, value, path if ours else None, value)


def duplicate_tier(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    tiers = resolve(doc, ("config", NS + "tiers"))
    if not isinstance(tiers, list) or not tiers:
        return None
    tier = copy.deepcopy(data.draw(st.sampled_from(tiers), label="duplicate"))
    path: DocPath = ("config", NS + "tiers", len(tiers))
    if not isinstance(tier, dict) or not isinstance(tier.get("name"), str):
        return Mutation("duplicate_tier", path, tier)
    if data.draw(st.booleans(), label="own queue"):
        tier["queue"] = "other-queue"  # only the name is duplicated
    return Mutation("duplicate_tier", path, tier, (*path, "name"), tier["name"])


def dangling_queue(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    lists = [
        p
        for p, v in nodes(doc)
        if isinstance(v, list)
        and pattern(p) in ("workerGroups[].queues", "workerGroups[].downstream")
    ]
    if not lists:
        return None
    path = data.draw(st.sampled_from(lists), label="dangling in")
    at = data.draw(st.integers(0, len(resolve(doc, path))), label="at")
    return Mutation("dangling_queue", (*path, at), "ghost", (*path, at), "ghost")


def nested_garbage(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    path = data.draw(st.sampled_from([p for p, _ in nodes(doc)]), label="garbage at")
    return Mutation("garbage", path, data.draw(garbage, label="garbage"))


def odd_scalar(data: st.DataObject, doc: dict[str, Any]) -> Mutation | None:
    path = data.draw(st.sampled_from([p for p, _ in nodes(doc)]), label="scalar at")
    return Mutation("odd_scalar", path, data.draw(scalars, label="scalar"))


MAKERS: dict[str, Maker] = {
    "wrong_type": wrong_type,
    "out_of_range": out_of_range,
    "in_range": in_range,
    "missing_key": missing_key,
    "unknown_key": unknown_key,
    "duplicate_tier": duplicate_tier,
    "dangling_queue": dangling_queue,
    "garbage": nested_garbage,
    "odd_scalar": odd_scalar,
}


# Weighted towards changes the model allows, so that a fair share of examples load and build.
KINDS = [*sorted(MAKERS), "in_range", "in_range", "in_range"]


def tier_names(doc: dict[str, Any]) -> list[Any]:
    tiers = resolve(doc, ("config", NS + "tiers"))
    if not isinstance(tiers, list):
        return []
    return [t.get("name") for t in tiers if isinstance(t, Mapping)]


# --------------------------------------------------------------------------------------------
# The property
# --------------------------------------------------------------------------------------------

QUEUE = "aws:sqs/queue:Queue"
SERVICE = "aws:ecs/service:Service"


def build_and_check(doc: dict[str, Any], loaded: StackSettings, workdir: Path) -> str:
    """Run the real program (``__main__.py``) under mocks on ``doc``; the outcome's name."""
    (workdir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc))
    try:
        built = offline_plan.build(STACK, workdir)
    except SettingsError as exc:
        # Settings the queues accept but the worker services cannot run on (no image...).
        assert exc.keys, exc
        assert not unexplained_keys(doc, exc.keys), (exc.keys, exc)
        return "service settings refused"
    # AWS's APIs take JSON: a NaN or an infinity in any input would be refused at deploy.
    json.dumps(built, allow_nan=False)
    violations = rules.check_all(rules.resources_from_plan(built))
    assert violations == [], "\n".join(map(str, violations))
    queues = {r["inputs"]["name"] for r in built["resources"] if r["type"] == QUEUE}
    # The schedules' DLQ (infra/schedules.py) is there whenever the stack is.
    schedules_dlq = f"{loaded.name_prefix}-schedules-dlq"
    assert queues == {loaded.queue_name(t) for t in loaded.tiers} | {loaded.dlq_name, schedules_dlq}
    services = [r for r in built["resources"] if r["type"] == SERVICE]
    assert len(services) == len(loaded.worker_groups)
    return "built"


def judge(doc: dict[str, Any], done: list[Mutation], workdir: Path, build: bool = True) -> str:
    """The property for one mutated document; the outcome's name. A document that loads is
    built only when ``build`` (the program takes a fraction of a second under mocks: the
    tests sample it)."""
    try:
        loaded = from_mapping(copy.deepcopy(doc), STACK, "Pulumi.dev.yaml")
    except SettingsError as exc:
        assert exc.keys, exc
        assert not unexplained_keys(doc, exc.keys), (exc.keys, str(exc))
        assert not misquoted(doc, exc), str(exc)
        reported = {key_path(doc, k) for k in exc.keys}
        for m in done:
            if m.must_be_named(doc):
                assert m.named in reported, (m, exc.keys)
        return "refused, keys named"
    for m in done:
        assert not m.must_be_named(doc), f"{m} loaded without a complaint"
    return build_and_check(doc, loaded, workdir) if build else "loaded (build not sampled)"


# Per kind of the model, values of every other kind (never None: None means "the default").
WRONG = {
    "number": ["12", True, [1], {"xa": 1}, math.nan, math.inf],
    "int": ["12", True, [1], {"xa": 1}, 2.5, math.nan],
    "str": [True, 7, ["a"], {"xa": 1}],
    "bool": [1, "yes", [True], {"xa": 1}],
    "list": [True, 3, "high", {"xa": 1}],
    "dict": [True, 3, "x", ["x"]],
}


def single_mutations(doc: dict[str, Any]) -> Iterator[Mutation]:
    """Every one-key mistake the model should catch, and every optional key left out."""
    for path, _ in list(nodes(doc)):
        pat = pattern(path)
        k = kind(pat or "?")
        for value in WRONG.get(k or "", []):
            yield Mutation("wrong_type", path, value, path, value)
        if pat in RANGES:
            lo, hi = RANGES[pat]
            for value in [lo - 1] + ([hi + 1] if hi is not None else []):
                yield Mutation("out_of_range", path, value, path, value)
        if pat in ALLOWED:
            value = max(ALLOWED[pat]) + 1
            yield Mutation("out_of_range", path, value, path, value)
        if isinstance(path[-1], str):
            yield Mutation(
                "missing_key", path, _MISSING, path if pat in REQUIRED else None, _MISSING
            )
        if isinstance(resolve(doc, path), Mapping) and pat in MAPPINGS:
            yield Mutation("unknown_key", (*path, "xbogus"), 1, (*path, "xbogus"), 1)
        if pat in ("workerGroups[].queues", "workerGroups[].downstream"):
            at = (*path, len(resolve(doc, path)))
            yield Mutation("dangling_queue", at, "ghost", at, "ghost")
        if pat == "tiers[]":
            tier = copy.deepcopy(resolve(doc, path))
            at = ("config", NS + "tiers", len(resolve(doc, path[:-1])))
            yield Mutation("duplicate_tier", at, tier, (*at, "name"), tier["name"])
    for name in (NS + "xbogus", "xbogus"):
        yield Mutation("unknown_key", ("config", name), 1, ("config", name), 1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("settings-fuzz")


def test_every_single_mistake_is_named_and_every_optional_key_may_go(workdir: Path) -> None:
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    built: set[tuple[str, str | None]] = set()
    for mutation in single_mutations(BASE):
        doc = copy.deepcopy(BASE)
        mutation.apply(doc)
        # One build per kind of change and key pattern (tiers[].delaySeconds once, not thrice).
        sample = (mutation.kind, pattern(mutation.path))
        outcomes[f"{mutation.kind}: {judge(doc, [mutation], workdir, sample not in built)}"] += 1
        built.add(sample)
    elapsed = time.monotonic() - started
    print(
        f"\nsingle mistakes: {sum(outcomes.values())} documents in {elapsed:.1f}s; "
        f"{dict(sorted(outcomes.items()))}"
    )
    assert outcomes["missing_key: built"] > 0


def test_random_bad_settings_are_named_or_build_a_valid_stack(workdir: Path) -> None:
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    started = time.monotonic()

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        doc = copy.deepcopy(BASE)
        done: list[Mutation] = []
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            maker = data.draw(st.sampled_from(KINDS), label="kind")
            mutation = MAKERS[maker](data, doc)
            if mutation is not None:
                mutation.apply(doc)
                done.append(mutation)
                kinds[maker] += 1
        # Build a third of the documents that load, chosen by content (stable when shrinking).
        sampled = zlib.crc32(repr(doc).encode()) % 3 == 0
        outcomes[judge(doc, done, workdir, sampled)] += 1

    check()
    elapsed = time.monotonic() - started
    print(
        f"\nsettings fuzz: {sum(outcomes.values())} examples in {elapsed:.1f}s; "
        f"outcomes {dict(outcomes)}; mutations {dict(kinds)}"
    )
    # The property was exercised on both sides: some documents loaded and were built.
    assert outcomes["built"] > 0 and outcomes["refused, keys named"] > 0, outcomes


# Two defects the fuzz found, pinned so that they stay fixed whatever the random draw.


def test_a_bad_list_item_does_not_shift_the_keys_of_the_items_after_it() -> None:
    doc = copy.deepcopy(BASE)
    doc["config"][NS + "workerGroups"][0]["queues"] = [None, "ghost"]
    with pytest.raises(SettingsError) as caught:
        from_mapping(doc, STACK)
    assert caught.value.keys == ["workerGroups[0].queues[0]", "workerGroups[0].queues[1]"]
    assert not misquoted(doc, caught.value)


def test_a_bad_value_is_not_compared_as_its_default() -> None:
    doc = copy.deepcopy(BASE)
    doc["config"][NS + "tiers"][0]["softTimeLimitSeconds"] = "12"  # high: time limit 540
    with pytest.raises(SettingsError) as caught:
        from_mapping(doc, STACK)
    # Only the type: not "1500 (the default) must be below timeLimitSeconds (540)".
    assert [str(p) for p in caught.value.problems] == [
        'tiers[0].softTimeLimitSeconds = "12": must be a whole number'
    ]


def test_non_finite_numbers_are_refused() -> None:
    doc = copy.deepcopy(BASE)
    doc["config"][NS + "workerGroups"][0]["scaling"]["target"] = math.nan
    with pytest.raises(SettingsError) as caught:
        from_mapping(doc, STACK)
    assert caught.value.keys == ["workerGroups[0].scaling.target"]


@pytest.mark.parametrize("unset", ["null", "absent"])
def test_an_unset_key_that_breaks_a_rule_is_quoted_as_unset_with_its_default(unset: str) -> None:
    # Found by CI's draw: softTimeLimitSeconds: null on the high tier (time limit 540) was
    # reported as "= 1500", a value the file does not hold.
    doc = copy.deepcopy(BASE)
    tier = doc["config"][NS + "tiers"][0]
    if unset == "null":
        tier["softTimeLimitSeconds"] = None
    else:
        del tier["softTimeLimitSeconds"]
    with pytest.raises(SettingsError) as caught:
        from_mapping(doc, STACK)
    assert [str(p) for p in caught.value.problems] == [
        "tiers[0].softTimeLimitSeconds = null: is unset, so it takes the default 1500: "
        "must be below timeLimitSeconds (540); set it"
    ]
    assert not misquoted(doc, caught.value)
