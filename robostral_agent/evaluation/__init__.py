"""Closed-loop evaluation (INTERFACES.md section 7), pure: cases, judging, the report.

The ROS side that runs the cases against the three nodes lives in
:mod:`robostral_agent.ros.eval_runner`; ``robostral eval`` ties the two together.
"""
