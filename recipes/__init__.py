"""Recipes and CLI."""
