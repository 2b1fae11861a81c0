"""Project tools: the speed/memory benchmark and the kill/resume soak test."""
