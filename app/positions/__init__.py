"""Positions and P&L: read from what migration 012's trigger keeps, never computed here."""
