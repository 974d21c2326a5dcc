"""verl_resrl: ResRL (arXiv 2605.00380, Negative Sample Projection Residual RL) as a verl 0.9.1 plugin."""

__version__ = "0.1.0"
