"""A stack settings error as the one line the commands print (``amply-jobs dev``, ``provision``,
``status``): an unknown key's value left out, the nearest known key suggested."""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING

from jobs.cli_support.params import one_line

if TYPE_CHECKING:
    from infra.settings import SettingsError


def settings_line(exc: SettingsError) -> str:
    """The settings error on one line, with an unknown key's value left out (it can be a
    whole mapping) and the nearest known key suggested."""
    from infra.settings import TOP_LEVEL_KEYS

    parts = []
    for p in exc.problems:
        if str(p.rule).startswith("unknown key"):
            # The rule lists the known keys of where the key sits ("known keys: a, b").
            _, _, listed = str(p.rule).partition("known keys:")
            known = [k.strip() for k in listed.split(",") if k.strip()] or list(TOP_LEVEL_KEYS)
            leaf = p.key.rsplit(".", 1)[-1]
            near = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
            what = f"did you mean {near[0]}?" if near else f"known keys: {', '.join(known)}"
            parts.append(f"{p.key}: unknown key; {what}")
        else:
            value = json.dumps(p.value, default=str)
            parts.append(f"{p.key} = {value}: {p.rule}")
    return one_line(f"invalid stack settings in {exc.source}: " + "; ".join(parts))
