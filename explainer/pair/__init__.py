"""The two networks and the file that holds them: the main network and its mirror, ImageNet weights
loaded from a local file, the scope gate, and the safetensors weights file with its metadata."""
