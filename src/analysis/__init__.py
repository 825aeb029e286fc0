"""Reading finished runs and sweeps back: job discovery, sweep summaries, figures."""
