"""Mosquitto as a projection of MongoDB: the ACL model, the dynamic-security control
client, the projector and the reconciler."""
