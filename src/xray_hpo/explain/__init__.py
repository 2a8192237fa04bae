"""What the model looked at: Grad-CAM maps, colour overlays and where the attention falls."""
