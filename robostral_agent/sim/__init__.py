"""MuJoCo reference work cell: scene, rendering, arm, executor, ground truth (no rclpy)."""
