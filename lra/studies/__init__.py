"""Studies: scripted experiments over the harness that write their own tables and plots."""
