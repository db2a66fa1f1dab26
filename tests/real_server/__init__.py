"""The real-server tier: a genuine llama.cpp ``llama-server`` serving a tiny model our code writes."""
