"""Finetune Lab shared helpers."""
