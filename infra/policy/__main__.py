"""Entry point of the CrossGuard pack: ``pulumi preview --policy-pack infra/policy``.

The CLI runs this file from the pack's directory; the rules live in the project's ``infra``
package, so the project root goes on the path first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.pack import PACK_NAME, policies

PolicyPack(PACK_NAME, policies(), enforcement_level=EnforcementLevel.MANDATORY)
