"""cloudnic: every pod gets a first-class port of the IaaS network."""

__version__ = "0.1.0"
