"""broker_auth"""
