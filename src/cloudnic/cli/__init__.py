"""cloudnic.cli"""
