"""The torture harness of issue 5: SIGKILL the agent at every named point and at random
moments, check the invariants after every restart, and hammer one agent 20-way.

``python -m bench.torture [--quick]`` runs everything and writes
``bench/results/torture.{json,md}``; the functional tests import the same pieces.
"""
