"""cloudnic.agent"""
