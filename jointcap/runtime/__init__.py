"""The training runtime around the LightningModule: checkpoint IO, resume, loggers, DDP guards, tracking, callbacks."""
