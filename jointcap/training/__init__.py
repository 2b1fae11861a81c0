"""How the model is trained beyond one forward pass: self-critical caption training, the CAM loss's schedule."""
