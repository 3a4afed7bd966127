"""Reading images, masks and image-level labels; dataset layouts; synthetic data."""
