"""The only subpackage that imports rclpy: nodes and message <-> numpy conversions."""
