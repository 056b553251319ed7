"""Vision-language model backends, output formats, parsers and grounding (no rclpy)."""
