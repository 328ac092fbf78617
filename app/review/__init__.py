"""The review domain: import, corrections, audit trail, conflicts, users, exports."""
