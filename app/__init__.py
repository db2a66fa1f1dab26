"""llmmon's Qt-free core: records, hub, store, scheduler, config and (later) proxy and alerts."""
