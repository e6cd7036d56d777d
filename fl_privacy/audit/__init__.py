"""The evaluator: ground truth, Observations, running attacks on recorded updates, scoring,
one-shot attacks, MIA rounds and the checks that a run can be attacked as configured.

* ``observe``: the victim's ground truth and the attack's ``Observation`` at a threat level;
* ``run_attacks``: attack recorded updates (batched where the problems match);
* ``scoring``: score a reconstruction against ground truth, save its picture (``AttackOutcome``);
* ``oneshot``: one client update built, recorded and attacked without a federation;
* ``mia_round``, ``multiround_mia``: membership inference on the global model and on updates;
* ``auxiliary``: the attacker's public data and the GIA-L generator trained on it;
* ``preflight``: every "can this run be attacked as configured" check, once;
* ``advice``: warnings about attacks that cannot work on this setup.
"""
