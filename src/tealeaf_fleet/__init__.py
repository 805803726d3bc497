"""tealeaf-fleet: enable, verify and roll back Tealeaf CX inter-process TLS over WinRM."""

__version__ = "0.1.0"
