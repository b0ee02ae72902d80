"""cloudnic.providers"""
