"""The evaluator: ground truth, Observations, running attacks on recorded updates, scoring,
one-shot attacks, MIA rounds and the checks that a run can be attacked as configured."""
