"""cloudnic.pool"""
