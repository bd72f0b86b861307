"""The hash-chained audit trail: its canonical form, verification and compliance export."""
