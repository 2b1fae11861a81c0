"""Lightning callbacks of jointcap (media logging)."""
