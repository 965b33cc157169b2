"""The autoscaler: follows demand through the controller, and scales to zero."""
