"""cloudnic benchmarks against the reference CNI plugins (issue 4); run with bench/run.py."""
