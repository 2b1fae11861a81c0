"""Lightning callbacks: exact resume (checkpointing) and media logging (CAM/attention overlays, captions)."""
