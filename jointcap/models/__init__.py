"""The network: encoder → shared embedding → CAM classifier and attention captioner."""
