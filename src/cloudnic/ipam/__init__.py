"""cloudnic.ipam"""
