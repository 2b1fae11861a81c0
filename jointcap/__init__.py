"""jointcap: a joint image classifier and captioner whose CAM and caption attention are made to agree."""

import multiprocessing

from jointcap.runtime.threads import quiet_openmp

# Idle OpenMP threads sleep instead of spinning: libgomp reads this once, when torch loads it, so it is set
# here, before any `python -m jointcap.…` entry point (or a DataLoader/joblib worker) imports torch.
quiet_openmp()
# A joblib (loky) worker imports jointcap before its first job: from then on a stop signal there is noted, not fatal.
if type(multiprocessing.current_process()).__name__ == "LokyProcess":  # (Hydra's imports only where needed)
    from jointcap.runtime.stopping import hold_stops_in_launcher_worker

    hold_stops_in_launcher_worker()
