"""Factories and helpers for the service tests."""
