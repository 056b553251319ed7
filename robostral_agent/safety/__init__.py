"""Safety supervisor core (pure, no rclpy): policy, rules, latch, approvals, audit log."""
