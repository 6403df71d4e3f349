"""The tamper-evident audit log: one hash-chained, HMAC-signed record per request."""

from garrison.audit.chain import Verification, verify_chain
from garrison.audit.log import AuditEvent, AuditLog

__all__ = ["AuditEvent", "AuditLog", "Verification", "verify_chain"]
