"""Test and demo support: the ScriptedServer, an OpenAI-compatible Kimi-protocol server."""
