"""Simulated LLM servers on 127.0.0.1 that replay recorded real payloads (``recordings/``)."""
