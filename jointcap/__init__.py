"""jointcap: a joint image classifier and captioner whose CAM and caption attention are made to agree."""

from jointcap.runtime.threads import quiet_openmp

# Idle OpenMP threads sleep instead of spinning: libgomp reads this once, when torch loads it, so it is set
# here, before any `python -m jointcap.…` entry point (or a DataLoader/joblib worker) imports torch.
quiet_openmp()
