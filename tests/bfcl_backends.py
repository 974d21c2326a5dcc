"""Test helper: BFCL's backend classes instantiated directly, as BFCL's own runner sets them up (no project code)."""

import copy
import json


def fresh_instances(backends: dict, row) -> list:
    """Fresh instances of a multi-turn row's involved classes, each loaded with its ``initial_config`` scenario."""
    config = json.loads(row["extra_info"]["initial_config"])
    instances = []
    for name in json.loads(row["extra_info"]["involved_classes"]):
        instance = backends[name]()
        if hasattr(instance, "_load_scenario"):
            instance._load_scenario(copy.deepcopy(config.get(name, {})), long_context=False)
        instances.append(instance)
    return instances
