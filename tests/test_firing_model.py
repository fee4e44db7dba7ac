"""The firing core under random faults: one seeded run of tests/firing_model.py (about a minute).
TEXIUM_MODEL_SEED picks the seed; benchmarks/firing_model.py runs many."""

import os
import random

from tests.firing_model import run_model


def test_every_invariant_holds_under_random_api_actions_and_node_faults(tmp_path):
    seed = int(os.environ.get("TEXIUM_MODEL_SEED") or random.randrange(1_000_000))
    problems, actions = run_model(seed, tmp_path, seconds=35)
    assert not problems, f"seed {seed} ({dict(actions)}): {len(problems)} broken invariants:\n" + "\n".join(
        problems[:40]
    )
